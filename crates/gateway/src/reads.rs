//! Anonymous public reads served from a short-lived copy.
//!
//! An event page and its availability are what a crowd refreshes while it
//! waits for a sale. For at most `GATEWAY_CACHE_TTL_MS` (500 by default, so
//! an answer is never more than half a second behind the service) the
//! gateway answers them itself, and concurrent misses for the same address
//! wait for one upstream call instead of each making their own. Every such
//! answer carries an ETag; a client that sends it back in If-None-Match
//! gets 304 without a body.
//!
//! Only anonymous GETs of public, per-address answers are kept (the event
//! list, one event, one event's availability): a request with credentials
//! may see more (an organizer's draft) and always goes to the service.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderValue, Method, Request, StatusCode},
    response::{IntoResponse, Response},
};
use tokio::sync::Notify;

/// Bodies larger than this are passed through, not kept.
const MAX_BODY: usize = 256 * 1024;

/// One kept answer.
struct Kept {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
    etag: HeaderValue,
    stored: Instant,
}

enum Slot {
    Kept(Arc<Kept>),
    /// Someone is asking the service; wait for them.
    Filling(Arc<Notify>),
}

pub struct ReadCache {
    ttl: Duration,
    max_entries: usize,
    slots: Mutex<HashMap<String, Slot>>,
}

/// What the proxy should do with a request.
pub enum Lookup {
    /// Answer with this.
    Hit(Response),
    /// Ask the service, then hand the answer to [`Filling::store`].
    Fill(Filling),
    /// Not kept here: ask the service as usual.
    Pass,
}

/// The right (and duty) to fill one address; waiters are released when it
/// is stored or dropped.
pub struct Filling {
    cache: Arc<ReadCache>,
    key: String,
    notify: Arc<Notify>,
    if_none_match: Option<HeaderValue>,
    done: bool,
}

/// Whether `path` names a public read that is the same for everyone.
fn public_read(path: &str) -> bool {
    let id_after = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|id| !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()))
    };
    path == "/api/v1/events" || id_after("/api/v1/events/") || id_after("/api/v1/tickets/availability/")
}

fn etag_of(body: &[u8]) -> HeaderValue {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    HeaderValue::from_str(&format!("\"{:016x}-{:x}\"", h.finish(), body.len()))
        .expect("hex is a valid header value")
}

fn answer(kept: &Kept, if_none_match: Option<&HeaderValue>) -> Response {
    let not_modified = if_none_match.is_some_and(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == kept.etag.to_str().unwrap_or_default())
        })
    });
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (kept.status, kept.body.clone()).into_response()
    };
    let headers = resp.headers_mut();
    if let (Some(ct), false) = (&kept.content_type, not_modified) {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    headers.insert(header::ETAG, kept.etag.clone());
    // Clients may keep it, but must ask again (cheaply, with the ETag).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

impl ReadCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Arc<Self> {
        Arc::new(ReadCache {
            ttl,
            max_entries,
            slots: Mutex::new(HashMap::new()),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    fn keeps(&self, req: &Request<Body>) -> bool {
        let h = req.headers();
        self.enabled()
            && req.method() == Method::GET
            && !h.contains_key(header::AUTHORIZATION)
            && !h.contains_key(header::COOKIE)
            && public_read(req.uri().path())
    }

    /// Looks `req` up; waits (at most `patience`) if someone else is
    /// already asking the service for the same address.
    pub fn lookup(
        self: &Arc<Self>,
        req: &Request<Body>,
        patience: Duration,
    ) -> impl std::future::Future<Output = Lookup> + Send + 'static {
        let wanted = self.keeps(req).then(|| {
            let key = req
                .uri()
                .path_and_query()
                .map(|pq| pq.as_str().to_string())
                .unwrap_or_default();
            (key, req.headers().get(header::IF_NONE_MATCH).cloned())
        });
        let cache = self.clone();
        async move {
            match wanted {
                Some((key, if_none_match)) => cache.find(key, if_none_match, patience).await,
                None => Lookup::Pass,
            }
        }
    }

    async fn find(
        self: Arc<Self>,
        key: String,
        if_none_match: Option<HeaderValue>,
        patience: Duration,
    ) -> Lookup {
        for _ in 0..2 {
            let waiting = {
                let mut slots = self.slots.lock().expect("read cache lock");
                match slots.get(&key) {
                    Some(Slot::Kept(kept)) if kept.stored.elapsed() < self.ttl => {
                        return Lookup::Hit(answer(kept, if_none_match.as_ref()));
                    }
                    Some(Slot::Filling(notify)) => {
                        let notify = notify.clone();
                        Some(notify)
                    }
                    _ => {
                        if slots.len() >= self.max_entries {
                            slots.retain(|_, s| match s {
                                Slot::Kept(k) => k.stored.elapsed() < self.ttl,
                                Slot::Filling(_) => true,
                            });
                            if slots.len() >= self.max_entries {
                                return Lookup::Pass;
                            }
                        }
                        let notify = Arc::new(Notify::new());
                        slots.insert(key.clone(), Slot::Filling(notify.clone()));
                        return Lookup::Fill(Filling {
                            cache: self.clone(),
                            key,
                            notify,
                            if_none_match,
                            done: false,
                        });
                    }
                }
            };
            if let Some(notify) = waiting {
                let filled = notify.notified();
                tokio::pin!(filled);
                filled.as_mut().enable();
                // Filled meanwhile (between the lookup and enabling)?
                let still_filling = matches!(
                    self.slots.lock().expect("read cache lock").get(&key),
                    Some(Slot::Filling(n)) if Arc::ptr_eq(n, &notify)
                );
                if still_filling && tokio::time::timeout(patience, filled).await.is_err() {
                    return Lookup::Pass;
                }
            }
        }
        Lookup::Pass
    }
}

impl Filling {
    /// Keeps the service's answer (200 and 404, with a known small body)
    /// and answers the request with it.
    pub async fn store(mut self, resp: Response) -> Response {
        let status = resp.status();
        let small = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= MAX_BODY);
        if !(small && (status == StatusCode::OK || status == StatusCode::NOT_FOUND)) {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let kept = Arc::new(Kept {
            status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            etag: etag_of(&body),
            body,
            stored: Instant::now(),
        });
        let resp = answer(&kept, self.if_none_match.as_ref());
        self.cache
            .slots
            .lock()
            .expect("read cache lock")
            .insert(self.key.clone(), Slot::Kept(kept));
        self.done = true;
        self.notify.notify_waiters();
        resp
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Not kept (an error, a large body): let the waiters ask themselves.
        let mut slots = self.cache.slots.lock().expect("read cache lock");
        if matches!(slots.get(&self.key), Some(Slot::Filling(n)) if Arc::ptr_eq(n, &self.notify)) {
            slots.remove(&self.key);
        }
        drop(slots);
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
