//! The alert rules and the Grafana dashboard's queries on a real Prometheus
//! scraping a provider.

mod alert_rules;
mod dashboard;
