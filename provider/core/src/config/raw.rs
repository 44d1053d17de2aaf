//! Raw serde view of the YAML file (placeholder; being written).
