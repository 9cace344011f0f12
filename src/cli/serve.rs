//! `mdmd serve`: run the server. Its flags (`config::ServeConfig`) live in the
//! library, beside the server that reads them.

/// Run the server until it is stopped.
pub async fn run(cfg: mdmd::config::ServeConfig) -> anyhow::Result<()> {
    mdmd::server::run(cfg).await
}
