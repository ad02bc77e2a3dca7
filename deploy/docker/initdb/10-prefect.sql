-- The Prefect server's own database beside the catalog's (POSTGRES_DB): run once, by the
-- postgres image, when its data volume is empty.
CREATE DATABASE prefect OWNER flywheel;
