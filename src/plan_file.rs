//! Plan files on the command line: reading and validating one, and the `Start` request that
//! carries it to Main.

/// Reads and validates a plan, with errors naming the file.
pub fn read_plan(path: &std::path::Path) -> Result<(String, protocol::plan::Plan), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read plan {}: {e}", path.display()))?;
    let plan = protocol::plan::Plan::from_toml(&text).map_err(|e| format!("plan {}: {e}", path.display()))?;
    Ok((text, plan))
}

/// The `Start` request for one host or several (`hosts` is never empty: clap gives `local`).
pub fn start_request(plan_toml: String, plan_source: String, hosts: &[String]) -> protocol::operator::OperatorRequest {
    protocol::operator::OperatorRequest::Start {
        plan_toml,
        plan_source,
        host: hosts.first().cloned().unwrap_or_else(|| "local".into()),
        hosts: if hosts.len() > 1 { hosts.to_vec() } else { Vec::new() },
    }
}
