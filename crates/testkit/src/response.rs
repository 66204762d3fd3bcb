//! An HTTP answer as tests look at it.

use std::future::Future;

use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// An HTTP answer: status, headers, raw text and the body parsed as JSON (`Value::Null` when
/// it is empty or not JSON).
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl TestResponse {
    pub async fn from_reqwest(response: reqwest::Response) -> TestResponse {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        TestResponse {
            status,
            headers,
            text,
            body,
        }
    }

    /// The `Content-Type` header, or `""`.
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected status {status}, got {} with body {}",
            self.status, self.text
        );
        &self.body
    }

    /// [`TestResponse::expect_status`], owning the body.
    #[track_caller]
    pub fn json(&self, status: u16) -> Value {
        self.expect_status(status).clone()
    }

    /// Asserts an RFC 9457 error: this status, `Content-Type: application/problem+json`, and a
    /// body with string `type`, `title`, `detail`, the same `status` and this `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.body["code"].as_str()),
            (status, Some(code)),
            "expected {status} {code}, got {} with body {}",
            self.status,
            self.text
        );
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "an error must be application/problem+json, got content-type {:?} for {}",
            self.content_type(),
            self.text
        );
        for field in ["type", "title", "detail"] {
            assert!(
                self.body[field].is_string(),
                "problem field {field:?} must be a string in {}",
                self.text
            );
        }
        assert_eq!(
            self.body["status"],
            json!(status),
            "problem `status` must repeat the HTTP status in {}",
            self.text
        );
    }
}

/// Sends a request and collects the answer as a [`TestResponse`].
pub trait Fetch {
    fn fetch(self) -> impl Future<Output = TestResponse> + Send;
}

impl Fetch for RequestBuilder {
    async fn fetch(self) -> TestResponse {
        let response = self.send().await.expect("send the request");
        TestResponse::from_reqwest(response).await
    }
}
