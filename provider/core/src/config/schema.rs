//! JSON Schema of the configuration (placeholder; being written).
