//! `hotframe demo` (placeholder).
/// Runs `hotframe demo`.
pub fn run(_args: crate::cli::DemoArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("demo is not built yet"))
}
