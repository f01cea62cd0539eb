"""The OTLP exporter: reads span batches from NATS (or in-process) and sends them to OTLP backends."""
