//! The web dashboard at `/` on the manager's API listener (docs/dashboard.md): a sign-in page,
//! then one page whose overview the server renders (so the first paint already shows the rack)
//! and whose script reads and acts through the same `/v1` API as the CLI, with the session
//! cookie and its CSRF header. Every asset is embedded in the binary and the page's
//! Content-Security-Policy allows nothing but this origin, so the browser fetches nothing else.
//!
//! Routes: `GET /` (the page, or the sign-in page without a session), `GET /app.js`,
//! `GET /app.css`, `POST /login` (a form with the token), `POST /logout`.

pub mod session;

use std::fmt::Write as _;

use rack_api::InstanceState;

use crate::{
    credentials::{Caller, same_secret},
    http::{HttpError, Method, Reply, Req, SESSION_COOKIE},
    rack::Rack,
};
pub use session::Sessions;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const PAGE: &str = include_str!("assets/page.html");
const LOGIN: &str = include_str!("assets/login.html");

/// Nothing but this origin, no framing, no referrer leaves the page.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
];

/// The largest sign-in form: a token and its field name.
pub const MAX_FORM_BYTES: u64 = 4096;

/// Whether the route is the dashboard's (served by [`route`], not the API).
pub fn is_dashboard(segments: &[String]) -> bool {
    matches!(segments, [] | [_]) && !matches!(segments, [only] if only == "metrics")
}

/// The dashboard's routes reachable without a credential (the `http` layer's `PublicRoute`).
pub fn is_public(method: &Method, segments: &[String]) -> bool {
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    matches!(
        (method, path.as_slice()),
        (Method::Get | Method::Head, [] | ["app.js"] | ["app.css"]) | (Method::Post, ["login"] | ["logout"])
    )
}

fn html(status: u16, body: String) -> Reply {
    let headers = SECURITY_HEADERS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Reply { status, content_type: "text/html; charset=utf-8", headers, body: body.into_bytes() }
}

fn asset(content_type: &'static str, body: &str) -> Reply {
    let headers = vec![
        ("Cache-Control".to_owned(), "no-cache".to_owned()),
        ("X-Content-Type-Options".to_owned(), "nosniff".to_owned()),
    ];
    Reply { status: 200, content_type, headers, body: body.as_bytes().to_vec() }
}

fn redirect(cookie: String) -> Reply {
    let mut reply = html(303, String::new());
    reply.headers.push(("Location".into(), "/".into()));
    reply.headers.push(("Set-Cookie".into(), cookie));
    reply
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `application/x-www-form-urlencoded` value of `key`.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let raw = text.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Answers one dashboard request. `authenticate` checks a credential as the API does.
pub fn route(
    rack: &Rack,
    sessions: &Sessions,
    authenticate: &dyn Fn(&str) -> Result<Caller, HttpError>,
    req: &Req,
) -> Result<Reply, HttpError> {
    let path: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, path.as_slice()) {
        (Method::Get | Method::Head, ["app.js"]) => Ok(asset("text/javascript; charset=utf-8", APP_JS)),
        (Method::Get | Method::Head, ["app.css"]) => Ok(asset("text/css; charset=utf-8", APP_CSS)),
        (Method::Get | Method::Head, []) => match &req.caller {
            Caller::Session { scope, name, csrf, .. } => Ok(html(200, page(rack, scope.as_str(), name, csrf)?)),
            _ => Ok(html(200, login(""))),
        },
        (Method::Post, ["login"]) => {
            let Some(token) = form_value(&req.body, "token").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
            else {
                return Ok(html(400, login("Paste a token.")));
            };
            let caller = match authenticate(&token) {
                Ok(caller) if caller.scope().is_some() && !matches!(caller, Caller::Session { .. }) => caller,
                _ => return Ok(html(401, login("That token is unknown, revoked, or not an operator's."))),
            };
            let _ = caller;
            let (id, _csrf) = sessions.create(&token).map_err(|e| HttpError::internal(format!("{e:#}")))?;
            Ok(redirect(format!(
                "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                session::TTL_MS / 1000
            )))
        }
        (Method::Post, ["logout"]) => {
            if let Caller::Session { csrf, csrf_ok: true, .. } = &req.caller {
                sessions.end(csrf);
            }
            Ok(redirect(format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")))
        }
        _ => Err(HttpError::not_found(
            format!("{} /{} is not a page of the dashboard", req.method, path.join("/")),
            "the dashboard is at /; the API's paths start with /v1",
        )),
    }
}

/// The session credential's check: `rest` is `<id>:<csrf header>` (see `http::SESSION_PREFIX`).
pub fn authenticate_session(
    sessions: &Sessions,
    rest: &str,
    authenticate: &dyn Fn(&str) -> Result<Caller, HttpError>,
) -> Result<Caller, HttpError> {
    let expired = || HttpError::new(401, "unauthorized", "the dashboard session has ended", "sign in again at /");
    let (id, given) = rest.split_once(':').unwrap_or((rest, ""));
    let (bearer, csrf) = sessions.resolve(id).ok_or_else(expired)?;
    let caller = authenticate(&bearer).map_err(|_| expired())?;
    let scope = caller.scope().ok_or_else(expired)?;
    let name = match &caller {
        Caller::Token(info) => info.name.clone(),
        _ => "admin token".to_owned(),
    };
    let csrf_ok = !given.is_empty() && same_secret(given, &csrf);
    Ok(Caller::Session { scope, name, csrf, csrf_ok })
}

fn login(message: &str) -> String {
    LOGIN.replace("{{message}}", &escape(message))
}

/// The page with the overview filled in, so the first paint shows the rack.
fn page(rack: &Rack, scope: &str, name: &str, csrf: &str) -> Result<String, HttpError> {
    let hosts = rack.hosts()?;
    let instances = rack.instances(true)?;
    let power = rack.power(None)?;
    let count = |state: InstanceState| instances.iter().filter(|i| i.state == state).count();
    let memory: u64 = hosts.iter().map(|h| h.memory_mib).sum();
    let memory_used: u64 = hosts.iter().map(|h| h.memory_used_mib).sum();
    let mut overview = String::new();
    let card = |out: &mut String, id: &str, label: &str, value: String| {
        let _ = write!(out, r#"<div class="card"><div class="num" id="{id}">{value}</div><div>{label}</div></div>"#);
    };
    card(&mut overview, "ov-hosts", "hosts", hosts.len().to_string());
    card(&mut overview, "ov-running", "running", count(InstanceState::Running).to_string());
    card(&mut overview, "ov-instances", "instances", instances.len().to_string());
    card(&mut overview, "ov-failed", "failed", count(InstanceState::Failed).to_string());
    card(&mut overview, "ov-memory", "memory reserved", format!("{memory_used} / {memory} MiB"));
    let budget = power.budget_w.map_or_else(String::new, |b| format!(" / {b:.0}"));
    card(&mut overview, "ov-watts", "watts now (est.)", format!("{:.1}{budget}", power.watts));
    Ok(PAGE
        .replace("{{csrf}}", &escape(csrf))
        .replace("{{scope}}", &escape(scope))
        .replace("{{who}}", &escape(name))
        .replace("{{overview}}", &overview))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_html_escapes() {
        assert_eq!(form_value(b"a=1&token=mast-ab%2Dcd+x", "token").as_deref(), Some("mast-ab-cd x"));
        assert_eq!(form_value(b"token=%zz", "token"), None);
        assert_eq!(form_value(b"token=%4", "token").as_deref(), Some("%4"));
        assert_eq!(escape(r#"<a href="x">'&"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }

    #[test]
    fn only_the_sign_in_page_and_assets_are_public() {
        let s = |p: &[&str]| p.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(is_public(&Method::Get, &s(&[])));
        assert!(is_public(&Method::Post, &s(&["login"])));
        assert!(!is_public(&Method::Get, &s(&["metrics"])));
        assert!(!is_public(&Method::Get, &s(&["v1", "instances"])));
        assert!(!is_dashboard(&s(&["metrics"])) && is_dashboard(&s(&[])) && !is_dashboard(&s(&["v1", "hosts"])));
    }
}
