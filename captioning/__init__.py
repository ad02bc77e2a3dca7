"""flywheel.captioning: the four caption types of report section 2.2 and their backends.

- `types`: prompt templates and output contracts (general, text, knowledge, structured; edit pairs),
  the `StructuredCaption` schema and JSON repair.
- `backends`: transformers (Qwen3-VL), openai (any OpenAI-compatible server), offline.
- `offline`, `ocr`: the offline backend's captions; OCR routed by script (rapidocr / Tesseract).
- `cache`: SQLite cache keyed by (sample id, type, backend, model revision, prompt hash).
- `annotate`: `Captioner`, the per-batch function the engine runs as a Ray actor.
- `server`: the OpenAI-compatible server that batches concurrent requests (`flywheel caption serve`).

Nothing here imports ray or prefect; heavy libraries load inside `setup()` or functions.
"""
