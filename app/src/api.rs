//! Talking to `hyperat serve`: JSON and multipart requests through the browser's fetch.
//! Every failure becomes a sentence for the page (the server's `{error, detail}` where
//! it sent one), never a silent `None`.

use hyperat::wire::ErrorBody;
use js_sys::{Array, Uint8Array};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, FormData, Headers, Request, RequestInit, Response};

/// The admin token (kept in the browser's local storage) the job endpoints may need.
pub fn token() -> Option<String> {
    storage()?
        .get_item("hyperat-token")
        .ok()
        .flatten()
        .filter(|t| !t.is_empty())
}

/// Remembers the admin token for the job endpoints.
pub fn set_token(t: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item("hyperat-token", t.trim());
    }
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn send(
    method: &str,
    url: &str,
    body: Option<&JsValue>,
    json: bool,
) -> Result<Response, String> {
    let init = RequestInit::new();
    init.set_method(method);
    let headers = Headers::new().map_err(js_err)?;
    if let Some(t) = token() {
        headers
            .set("Authorization", &format!("Bearer {t}"))
            .map_err(js_err)?;
    }
    if json {
        headers
            .set("Content-Type", "application/json")
            .map_err(js_err)?;
    }
    init.set_headers(&headers);
    if let Some(b) = body {
        init.set_body(b);
    }
    let req = Request::new_with_str_and_init(url, &init).map_err(js_err)?;
    let window = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(|e| format!("the server did not answer ({})", js_err(e)))?;
    let resp: Response = resp.dyn_into().map_err(js_err)?;
    if resp.ok() {
        return Ok(resp);
    }
    let text = match resp.text() {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|t| t.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    Err(error_text(resp.status(), &text))
}

/// The sentence shown for a failed request.
pub fn error_text(status: u16, body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        // The server's sentence says what was wrong; its status and code are for programs.
        Ok(e) => e.detail,
        _ if body.trim().is_empty() => format!("the server answered {status}"),
        _ => format!(
            "the server answered {status}: {}",
            body.chars().take(200).collect::<String>()
        ),
    }
}

async fn json_of<T: DeserializeOwned>(resp: Response) -> Result<T, String> {
    let text = JsFuture::from(resp.text().map_err(js_err)?)
        .await
        .map_err(js_err)?;
    let text = text.as_string().unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| format!("unreadable answer from the server: {e}"))
}

/// `GET url` → a `hyperat::wire` answer.
pub async fn get<T: DeserializeOwned>(url: &str) -> Result<T, String> {
    json_of(send("GET", url, None, false).await?).await
}

/// `DELETE url` → a `hyperat::wire` answer.
pub async fn delete<T: DeserializeOwned>(url: &str) -> Result<T, String> {
    json_of(send("DELETE", url, None, false).await?).await
}

/// `POST url` with a JSON body → a `hyperat::wire` answer.
pub async fn post_json<T: DeserializeOwned>(url: &str, body: &impl Serialize) -> Result<T, String> {
    let b = JsValue::from_str(&serde_json::to_string(body).map_err(|e| e.to_string())?);
    json_of(send("POST", url, Some(&b), true).await?).await
}

/// `PATCH url` with a JSON body → a `hyperat::wire` answer.
pub async fn patch_json<T: DeserializeOwned>(
    url: &str,
    body: &impl Serialize,
) -> Result<T, String> {
    let b = JsValue::from_str(&serde_json::to_string(body).map_err(|e| e.to_string())?);
    json_of(send("PATCH", url, Some(&b), true).await?).await
}

/// `GET url` → bytes (model exports).
pub async fn get_bytes(url: &str) -> Result<Vec<u8>, String> {
    let resp = send("GET", url, None, false).await?;
    let buf = JsFuture::from(resp.array_buffer().map_err(js_err)?)
        .await
        .map_err(js_err)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// A multipart form: text fields and optionally the `image` file.
#[derive(Default)]
pub struct Form {
    fields: Vec<(String, String)>,
    image: Option<Vec<u8>>,
}

impl Form {
    /// Adds a text field.
    pub fn field(mut self, k: &str, v: impl ToString) -> Self {
        self.fields.push((k.into(), v.to_string()));
        self
    }

    /// Adds the image: an uploaded file's bytes, or a gallery sample id.
    pub fn input(self, img: &crate::Picked) -> Self {
        match img {
            crate::Picked::Sample { id, dataset, .. } => {
                self.field("sample", id).field("dataset", dataset)
            }
            crate::Picked::Upload {
                bytes,
                invert,
                label,
                ..
            } => {
                let mut f = self.field("invert", invert);
                if let Some(l) = label {
                    f = f.field("label", l);
                }
                f.image = Some(bytes.clone());
                f
            }
        }
    }

    /// `POST url` with this form → a `hyperat::wire` answer.
    pub async fn post<T: DeserializeOwned>(self, url: &str) -> Result<T, String> {
        let fd = FormData::new().map_err(js_err)?;
        for (k, v) in &self.fields {
            fd.append_with_str(k, v).map_err(js_err)?;
        }
        if let Some(bytes) = &self.image {
            let parts = Array::of1(&Uint8Array::from(&bytes[..]));
            let blob = Blob::new_with_u8_array_sequence(&parts).map_err(js_err)?;
            fd.append_with_blob_and_filename("image", &blob, "upload")
                .map_err(js_err)?;
        }
        json_of(send("POST", url, Some(&fd.into()), false).await?).await
    }
}

/// Milliseconds since the page loaded (for timing in-browser work).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}
