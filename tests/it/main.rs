//! End-to-end tests of the `threadcycle` binary on real parts: nats-server, llama-server and the
//! Gemma 3 270M model. `make test` installs them; a missing one fails with what to install.

mod amenities;
mod background;
mod cli_json;
mod compose;
mod cycle_cluster;
mod cycle_concurrent;
mod cycle_crash;
mod cycle_demo;
mod cycle_docker;
mod cycle_endpoint;
mod cycle_escalation;
mod cycle_faults;
mod cycle_gate;
mod cycle_gpu;
mod cycle_kept_runs;
mod cycle_multihost;
mod cycle_outages;
mod cycle_pull_ahead;
mod cycle_resume;
mod cycle_scale;
mod cycle_tune;
mod cycle_up_supervised;
mod fit_oracle;
mod host_checks;
mod hostile_output;
mod plan_errors;
mod prometheus;
mod support;
mod two_operators;
