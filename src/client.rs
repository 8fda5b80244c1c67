//! A small HTTP/1.1 client over one keep-alive connection, for the load tool and the tests.
//!
//! It is deliberately thin (no pool, no redirects, no TLS) so that a load run measures the server,
//! not the client.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// One connection to a server.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

/// A response: status, content type, and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            serde_json::Value::String(format!(
                "<not JSON: {err}: {}>",
                String::from_utf8_lossy(&self.body)
            ))
        })
    }
}

impl Client {
    /// Opens a connection.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Client {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, hyper::Error> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body.into()))
            .expect("a well-formed request");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST` a JSON body.
    pub async fn post(
        &mut self,
        path: &str,
        key: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Response, hyper::Error> {
        self.send(
            Method::POST,
            path,
            key,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// `GET` a path.
    pub async fn get(&mut self, path: &str, key: Option<&str>) -> Result<Response, hyper::Error> {
        self.send(Method::GET, path, key, &[], Bytes::new()).await
    }
}
