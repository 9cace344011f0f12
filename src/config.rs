//! Server configuration: flags with `MDMD_*` environment equivalents.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (devices, SCEP and the admin API share it).
    #[arg(long, env = "MDMD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: String,
    /// Where the database and generated secrets live (created on first start).
    #[arg(long, env = "MDMD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where certificates and keys live (created on first start).
    #[arg(long, env = "MDMD_CERTS_DIR", default_value = "./certs")]
    pub certs_dir: PathBuf,
    /// The URL devices use to reach this server; it goes into profiles.
    /// Default: https://localhost:<port>.
    #[arg(long, env = "MDMD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Admin API key. If unset, one is generated on first start, stored 0600
    /// in the data dir as `api-key`, and printed once.
    #[arg(long, env = "MDMD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// APNs topic devices enroll with. Default: from the push certificate, or
    /// a generated `com.apple.mgmt.External.<uuid>` kept in the data dir.
    #[arg(long, env = "MDMD_TOPIC")]
    pub topic: Option<String>,
    /// Largest accepted device request body, in bytes.
    #[arg(long, env = "MDMD_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    pub max_body: usize,
    /// Largest accepted admin API request body, in bytes (a 100,000-target enqueue is ~5 MB).
    #[arg(long, env = "MDMD_MAX_API_BODY", default_value_t = 64 * 1024 * 1024)]
    pub max_api_body: usize,
}

impl ServeConfig {
    pub fn port(&self) -> u16 {
        self.listen.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(8443)
    }

    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("https://localhost:{}", self.port())).trim_end_matches('/').to_owned()
    }
}
