//! External agent (placeholder until the agent lands).
/// Runs `hotframe agent`.
pub fn run(_args: crate::cli::AgentArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("agent is not built yet"))
}
