//! The CLI's own HTTP client for a running server's admin API.
//!
//! `ClientOpts` are the flags every client subcommand shares (--server,
//! --api-key, --trust-ca); `AdminClient` sends JSON or bytes with the key, and
//! `Reply` checks an answer in one place. The load generator keeps its own
//! client (`sim::load::Admin`); nothing here is shared with it.

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::Value;

pub use reqwest::Method;

#[derive(Args, Clone)]
pub struct ClientOpts {
    /// URL of a running mdmd.
    #[arg(long, env = "MDMD_SERVER", default_value = "https://localhost:8443", global = true)]
    pub server: String,
    /// Admin API key (default: contents of ./data/api-key).
    #[arg(long, env = "MDMD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Also trust this CA (PEM) for the server's TLS certificate (default: ./certs/ca.pem if present).
    #[arg(long, env = "MDMD_TRUST_CA", global = true)]
    trust_ca: Option<std::path::PathBuf>,
}

impl ClientOpts {
    /// An HTTPS client that trusts the server's CA (see `trust_pem`). The user
    /// agent is the one the CLI has always sent.
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .user_agent("MDM/1.0 mdmd-sim")
            .timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = self.trust_pem()? {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(b.build()?)
    }

    /// The CA clients trust: --trust-ca, else ./certs/ca.pem when there is one.
    pub fn trust_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self
            .trust_ca
            .clone()
            .or_else(|| Some(std::path::PathBuf::from("certs/ca.pem")).filter(|p| p.exists()));
        Ok(match path {
            Some(p) => Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        })
    }

    /// --api-key, else ./data/api-key.
    pub fn api_key(&self) -> anyhow::Result<String> {
        match &self.api_key {
            Some(k) => Ok(k.clone()),
            None => std::fs::read_to_string("data/api-key")
                .map(|s| s.trim().to_owned())
                .context("no API key: pass --api-key or set MDMD_API_KEY (or run where ./data/api-key exists)"),
        }
    }

    pub fn admin(&self) -> anyhow::Result<AdminClient> {
        let key = self.api_key()?;
        Ok(AdminClient::new(&self.server, &key, self.http()?))
    }
}

/// A path segment, percent-encoded.
pub fn enc(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

/// An answer: the HTTP status and the body as JSON (a JSON string when the
/// body is not JSON).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The body of a 200 or 201; otherwise `HTTP status: error`, the body's
    /// `error` member (as JSON) or else the whole body.
    pub fn ok(self) -> anyhow::Result<Value> {
        match (self.status, self.body) {
            (200 | 201, v) => Ok(v),
            (s, v) => Err(anyhow::anyhow!("HTTP {s}: {}", v.get("error").cloned().unwrap_or(v.clone()))),
        }
    }

    /// The body of a 200 only; otherwise `HTTP status: body`.
    pub fn ok_200(self) -> anyhow::Result<Value> {
        match (self.status, self.body) {
            (200, v) => Ok(v),
            (s, v) => bail!("HTTP {s}: {v}"),
        }
    }

    /// As `ok`, but the error is the `error` text followed by the answer's
    /// validation `problems`, one per line (declarations and their sets).
    pub fn ok_or_problems(self) -> anyhow::Result<Value> {
        match (self.status, self.body) {
            (200 | 201, v) => Ok(v),
            (s, v) => {
                let problems: Vec<String> = v["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("\n  {}: {}", p["path"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or("")))
                    .collect();
                Err(anyhow::anyhow!(
                    "HTTP {s}: {}{}",
                    v.get("error")
                        .and_then(|e| e.as_str())
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                    problems.concat()
                ))
            }
        }
    }
}

/// A client of one server's admin API, authenticated with a bearer key.
pub struct AdminClient {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str, key: &str, http: reqwest::Client) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            http,
        }
    }

    /// A request that got no HTTP answer, said with its URL; an `http://`
    /// URL that reached a server which did not speak plain HTTP is most
    /// likely mdmd's HTTPS listener.
    fn transport(&self, e: reqwest::Error, path: &str) -> anyhow::Error {
        let url = format!("{}{path}", self.base);
        if self.base.starts_with("http://") && !e.is_connect() && !e.is_timeout() {
            anyhow::Error::new(e).context(format!(
                "calling {url}: no HTTP answer (if mdmd is serving there, it answers HTTPS, not HTTP)"
            ))
        } else {
            anyhow::Error::new(e).context(format!("calling {url}"))
        }
    }

    /// A request to `path` with the key, not yet sent.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.key)
    }

    /// Read an answer's body as JSON, or as a JSON string when it is not JSON.
    async fn reply(resp: reqwest::Response) -> anyhow::Result<Reply> {
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, body })
    }

    /// Send `method path` with an optional JSON body; the answer unchecked.
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Reply> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| self.transport(e, path))?;
        Self::reply(resp).await
    }

    /// GET, expecting 200; otherwise `GET path: HTTP status: body`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        match self.send(Method::GET, path, None).await? {
            Reply { status: 200, body } => Ok(body),
            Reply { status, body } => bail!("GET {path}: HTTP {status}: {body}"),
        }
    }

    /// POST JSON, expecting 200 or 201; otherwise `POST path: HTTP status: body`.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        match self.send(Method::POST, path, Some(body)).await? {
            Reply { status: 200 | 201, body } => Ok(body),
            Reply { status, body } => bail!("POST {path}: HTTP {status}: {body}"),
        }
    }

    /// POST a configuration profile (a .mobileconfig's bytes), expecting 200 or 201.
    pub async fn post_profile(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let resp = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/x-apple-aspen-config")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(e, path))?;
        match Self::reply(resp).await? {
            Reply { status: 200 | 201, body } => Ok(body),
            Reply { status, body } => bail!("POST {path}: HTTP {status}: {body}"),
        }
    }

    /// PUT raw bytes of `content_type`, with extra headers; the response as it came.
    pub async fn put_bytes(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .request(Method::PUT, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.map_err(|e| self.transport(e, path))
    }

    /// Send `method path` with a body of `content_type`; the answer unchecked.
    pub async fn send_bytes(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<Reply> {
        let resp = self
            .request(method, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(e, path))?;
        Self::reply(resp).await
    }

    /// POST a file as the body, read as it is sent (never whole in memory), with its length;
    /// the answer unchecked. The client's 30-second limit becomes `timeout` for this request
    /// (a large app on a slow link takes a while).
    pub async fn post_file(
        &self,
        path: &str,
        content_type: &str,
        file: &std::path::Path,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Reply> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        let len = f.metadata().await.with_context(|| format!("reading {}", file.display()))?.len();
        let resp = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .timeout(timeout)
            .body(reqwest::Body::wrap(FileBody { file: f, left: len }))
            .send()
            .await
            .map_err(|e| self.transport(e, path))
            .with_context(|| format!("sending {}", file.display()))?;
        Self::reply(resp).await
    }

    /// GET raw bytes, expecting success; otherwise `HTTP status: body as text`.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        let resp = self.request(Method::GET, path).send().await.map_err(|e| self.transport(e, path))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}

/// A file as a request body, read in chunks as the connection takes them. `left` is the length
/// announced in Content-Length: a file that grows is cut there, one that shrinks is an error.
struct FileBody {
    file: tokio::fs::File,
    left: u64,
}

impl hyper::body::Body for FileBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(self.left.min(64 * 1024)).unwrap_or(64 * 1024);
        let mut buf = vec![0u8; want];
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.file), cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was being sent",
                    ))));
                }
                self.left -= n as u64;
                buf.truncate(n);
                Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from(buf)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::FileBody;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_file_body_streams_the_whole_file_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.ipa");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let file = tokio::fs::File::open(&p).await.unwrap();
        let mut body = FileBody {
            file,
            left: data.len() as u64,
        };
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(data.len() as u64));
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(f) = body.frame().await {
            got.extend_from_slice(f.unwrap().data_ref().unwrap());
            frames += 1;
        }
        assert_eq!(got, data);
        assert!(frames > 1, "read in chunks, not at once");
        // A file shorter than announced is an error, not a short body.
        let file = tokio::fs::File::open(&p).await.unwrap();
        let mut body = FileBody {
            file,
            left: data.len() as u64 + 1,
        };
        let mut failed = false;
        while let Some(f) = body.frame().await {
            if f.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
