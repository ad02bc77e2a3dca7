"""The closed loop (report section 2.4): signals, the FAISS index, the router, emission, retraining, measurement."""
