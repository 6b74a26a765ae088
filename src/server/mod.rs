//! HTTP server (placeholder until the server lands).
/// Runs `hotframe serve`.
pub fn run_serve(_args: crate::cli::ServeArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("serve is not built yet"))
}
