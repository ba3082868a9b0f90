//! Integration tests of the coordination runtime against a real nats-server.

mod handoff_delivery;
mod probe;
mod replicas;
mod security;
