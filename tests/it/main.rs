//! End-to-end tests of the `threadcycle` binary on real parts: nats-server, llama-server and the
//! Gemma 3 270M model. `make test` installs them; a missing one fails with what to install.

mod cycle_concurrent;
mod cycle_crash;
mod cycle_demo;
mod cycle_docker;
mod cycle_escalation;
mod host_checks;
mod hostile_output;
mod plan_errors;
mod support;
