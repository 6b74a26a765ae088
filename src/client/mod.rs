//! CLI commands that talk to a server (placeholder).
/// Runs `hotframe export`.
pub fn export(_args: crate::cli::ExportArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("export is not built yet"))
}
/// Runs `hotframe import`.
pub fn import(_args: crate::cli::ImportArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("import is not built yet"))
}
