//! The web application in a real browser (Debian's chromium, headless,
//! through chromedriver), on the embedded backend: what a customer and an
//! organizer do, checked on the page and against the API. Each journey
//! saves screenshots under `<target>/tmp/web-journeys/`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use ticketer_testkit::browser::{self, Browser};

use crate::harness::TestStack;

const PATIENCE: Duration = Duration::from_secs(20);
const PASSWORD: &str = "violet-harbour-lantern-42";

fn shots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-journeys")
}

async fn open_browser() -> Browser {
    assert!(
        browser::available(),
        "chromium and chromedriver are needed ({} and {})",
        browser::CHROMIUM,
        browser::CHROMEDRIVER
    );
    Browser::start(1280, 900, shots())
        .await
        .expect("a headless chromium")
}

/// An organizer's published event, made through the API.
async fn published(s: &TestStack, organizer: &str, name: &str, description: &str, capacity: i64) -> i64 {
    let body = json!({
        "event_name": name, "description": description, "category": "Music", "location": "Porto, Casa da Música",
        "event_date": "2031-06-12", "start_time": "20:30", "end_time": "23:00",
        "ticket_capacity": capacity, "ticket_price": "35.00"
    });
    let r = s
        .call(Method::POST, "/api/v1/events", Some(organizer), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_i64().unwrap();
    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/events/{id}/publish"),
            Some(organizer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    s.eventually(&format!("/api/v1/tickets/availability/{id}"), |b| {
        b["status"] == "ON_SALE"
    })
    .await;
    id
}

async fn register(b: &Browser, base: &str, email: &str, role: &str) {
    b.goto(&format!("{base}/register")).await.unwrap();
    b.fill_and_submit(
        &[
            ("#first_name", "Ana"),
            ("#last_name", "Sousa"),
            ("#email", email),
            ("#password", PASSWORD),
        ],
        &format!("input[name=role][value={role}]"),
    )
    .await
    .unwrap();
    b.click("form[action='/register'] button[type=submit]")
        .await
        .unwrap();
    b.wait_for_text("header", email, PATIENCE).await.unwrap();
}

/// Books from the event page and returns the booking page's id once the
/// booking has its final status.
async fn book_in_browser(b: &Browser, base: &str, event: i64, tickets: &str, card: &str) -> String {
    b.goto(&format!("{base}/events/{event}")).await.unwrap();
    b.click(&format!("#payment_token option[value='{card}']"))
        .await
        .unwrap();
    b.fill_and_submit(&[("#number_of_tickets", tickets)], "form[action$='/book'] button")
        .await
        .unwrap();
    let status = b.wait_for_text("#booking .outcome", "", PATIENCE).await.unwrap();
    // The page follows a PENDING booking until it is settled.
    for _ in 0..100 {
        let t = b.find("#booking .outcome").await.unwrap().text().await.unwrap();
        if !t.contains("PENDING") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!status.is_empty());
    let url = b.url().await.unwrap();
    url.rsplit('/').next().unwrap().to_string()
}

async fn booking(s: &TestStack, token: &str, id: &str) -> Value {
    let r = s
        .call(Method::GET, &format!("/api/v1/bookings/{id}"), Some(token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn login_token(s: &TestStack, email: &str) -> String {
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.text("access_token")
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; ./scripts/test runs it with the servers (CI installs both)"]
async fn a_customer_finds_books_sees_tickets_and_cancels() {
    let s = TestStack::embedded(&[]).await;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let event = published(
        &s,
        &organizer,
        "Harbour Jazz Night",
        "A quartet by the river, live.",
        20,
    )
    .await;
    published(&s, &organizer, "Chamber Strings", "Four string quartets.", 20).await;
    let b = open_browser().await;
    let email = format!("web-{}@example.com", uuid::Uuid::new_v4().simple());
    register(&b, &s.base, &email, "CUSTOMER").await;

    // Search finds the event and not the other one.
    b.fill_and_submit(&[("#q", "harbour jazz")], "form[role=search] button")
        .await
        .unwrap();
    let results = b.wait_for_text("main", "1 event found", PATIENCE).await.unwrap();
    b.screenshot("search").await.unwrap();
    assert!(results.contains("Harbour Jazz Night"), "{results}");
    assert!(!results.contains("Chamber Strings"), "{results}");
    b.click(&format!("a[href='/events/{event}']")).await.unwrap();
    b.wait_for_text("#availability", "20 of 20 left", PATIENCE)
        .await
        .unwrap();
    b.screenshot("event-page").await.unwrap();
    // The same page at a phone's width.
    b.resize(390, 844).await.unwrap();
    b.screenshot("event-page-phone").await.unwrap();
    b.resize(1280, 900).await.unwrap();

    // Two tickets, paid, shown with a QR code each: the tickets the
    // booking service says were sold.
    let first = book_in_browser(&b, &s.base, event, "2", "tok_visa").await;
    b.wait_for_text("#booking .outcome", "CONFIRMED", PATIENCE)
        .await
        .unwrap();
    assert_eq!(b.count(".ticket .qr svg").await.unwrap(), 2);
    b.screenshot("checkout-confirmed").await.unwrap();
    let token = login_token(&s, &email).await;
    let confirmed = booking(&s, &token, &first).await;
    assert_eq!(confirmed["status"], "CONFIRMED");
    let page = b.text().await.unwrap();
    for t in confirmed["ticket_ids"].as_array().unwrap() {
        assert!(page.contains(t.as_str().unwrap()), "ticket {t} not on the page");
    }

    // A second booking, paid with a card the customer saved, then
    // cancelled from its page: refunded, seats back.
    let saved = s
        .call(
            Method::POST,
            "/api/v1/payments/methods",
            Some(&token),
            Some(json!({"payment_token": "tok_mastercard", "make_default": true})),
        )
        .await;
    assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
    let method = format!("method:{}", saved.text("id"));
    let second = book_in_browser(&b, &s.base, event, "1", &method).await;
    b.wait_for_text("#booking .outcome", "CONFIRMED", PATIENCE)
        .await
        .unwrap();
    b.click("form[action$='/cancel'] button").await.unwrap();
    b.wait_for_text("#booking .outcome", "CANCELLED", PATIENCE)
        .await
        .unwrap();
    assert_eq!(booking(&s, &token, &second).await["status"], "CANCELLED");
    assert_eq!(booking(&s, &token, &first).await["status"], "CONFIRMED");

    // Both on "my bookings".
    b.goto(&format!("{}/bookings", s.base)).await.unwrap();
    let mine = b.wait_for_text("main", "CANCELLED", PATIENCE).await.unwrap();
    assert!(
        mine.contains("CONFIRMED") && mine.contains("Harbour Jazz Night"),
        "{mine}"
    );

    // What the customer was told, on their notifications page.
    b.goto(&format!("{}/notifications", s.base)).await.unwrap();
    let told = b
        .wait_for_text("main", "Your tickets for Harbour Jazz Night", PATIENCE)
        .await
        .unwrap();
    assert!(told.contains("Welcome to Ticketer"), "{told}");

    // A declined card: the booking fails and the page says why.
    let declined = book_in_browser(&b, &s.base, event, "1", "tok_chargeDeclined").await;
    let outcome = b
        .wait_for_text("#booking .outcome", "FAILED", PATIENCE)
        .await
        .unwrap();
    assert!(outcome.contains("Your card was declined"), "{outcome}");
    assert_eq!(
        booking(&s, &token, &declined).await["failure_reason"],
        "PAYMENT_DECLINED"
    );
    b.screenshot("checkout-declined").await.unwrap();

    // The organizer's and the administrator's pages are not a customer's.
    b.goto(&format!("{}/organizer", s.base)).await.unwrap();
    b.wait_for_text("main", "You do not have access", PATIENCE)
        .await
        .unwrap();
    b.goto(&format!("{}/admin/users", s.base)).await.unwrap();
    b.wait_for_text("main", "You do not have access", PATIENCE)
        .await
        .unwrap();
    b.goto(&format!("{}/organizer/events/{event}/sales", s.base))
        .await
        .unwrap();
    b.wait_for_text("main", "You do not have access", PATIENCE)
        .await
        .unwrap();

    // Logged out, the bookings page asks for a login again.
    b.goto(&s.base).await.unwrap();
    b.click("form[action='/logout'] button").await.unwrap();
    b.wait_for_text("header", "Log in", PATIENCE).await.unwrap();
    b.goto(&format!("{}/bookings", s.base)).await.unwrap();
    assert!(b.url().await.unwrap().contains("/login?next="));
    b.close().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; ./scripts/test runs it with the servers (CI installs both)"]
async fn an_organizer_creates_publishes_edits_and_watches_sales() {
    let s = TestStack::embedded(&[]).await;
    let b = open_browser().await;
    let email = format!("web-org-{}@example.com", uuid::Uuid::new_v4().simple());
    register(&b, &s.base, &email, "ORGANIZER").await;
    b.goto(&format!("{}/organizer/events/new", s.base)).await.unwrap();

    // A wrong field is named next to itself, and what was typed is kept.
    let fields = [
        ("#event_name", "Rooftop Sessions"),
        ("#description", "Sunset sets on the roof."),
        ("#category", "Music"),
        ("#location", "Lisbon"),
        ("#ticket_capacity", "0"),
        ("#ticket_price", "18.50"),
    ];
    for (css, value) in [
        ("#event_date", "2031-06-12"),
        ("#start_time", "19:30"),
        ("#end_time", "23:00"),
    ] {
        b.set_value(css, value).await.unwrap();
    }
    b.fill_and_submit(&fields, "form.card button[type=submit]")
        .await
        .unwrap();
    let error = b
        .wait_for_text("#ticket_capacity-error", "", PATIENCE)
        .await
        .unwrap();
    assert!(!error.is_empty());
    assert_eq!(
        b.find("#event_name")
            .await
            .unwrap()
            .attribute("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Rooftop Sessions")
    );
    b.screenshot("organizer-validation").await.unwrap();

    b.fill_and_submit(&[("#ticket_capacity", "10")], "form.card button[type=submit]")
        .await
        .unwrap();
    b.wait_for_text("main", "DRAFT", PATIENCE).await.unwrap();
    let url = b.url().await.unwrap();
    let id: i64 = url.rsplit('/').next().unwrap().parse().expect("the event's page");

    // Edited and published through the pages; the API agrees.
    b.fill_and_submit(
        &[("#event_name", "Rooftop Sessions: Summer")],
        "form.card button[type=submit]",
    )
    .await
    .unwrap();
    // Saved: the page shows the new name before anything else is clicked.
    b.wait_for_text("h1", "Rooftop Sessions: Summer", PATIENCE)
        .await
        .unwrap();
    b.click("form[action$='/publish'] button").await.unwrap();
    b.wait_for_text("main", "PUBLISHED", PATIENCE).await.unwrap();
    let event = s
        .call(Method::GET, &format!("/api/v1/events/{id}"), None, None)
        .await;
    assert_eq!(event.body["event_name"], "Rooftop Sessions: Summer");
    assert_eq!(event.body["status"], "PUBLISHED");
    s.eventually(&format!("/api/v1/tickets/availability/{id}"), |b| {
        b["status"] == "ON_SALE"
    })
    .await;

    // The sales view follows bookings as they arrive, without a reload.
    b.goto(&format!("{}/organizer/events/{id}/sales", s.base))
        .await
        .unwrap();
    b.wait_for_text(".figures", "0\nsold", PATIENCE).await.unwrap();
    for n in [2, 1] {
        let (_, customer, _) = s.user("CUSTOMER").await;
        let r = s
            .call_with(
                Method::POST,
                "/api/v1/bookings",
                Some(&customer),
                Some(json!({"event_id": id, "number_of_tickets": n, "payment_token": "tok_visa"})),
                &[("prefer", "wait=25")],
            )
            .await;
        assert_eq!(r.text("status"), "CONFIRMED", "{}", r.body);
    }
    let figures = b.wait_for_text(".figures", "3\nsold", PATIENCE).await.unwrap();
    assert!(figures.contains("7\navailable"), "{figures}");
    assert!(figures.contains("55.50"), "{figures}");
    b.wait_for_text("#sales", "Bookings (2)", PATIENCE).await.unwrap();
    b.screenshot("organizer-sales").await.unwrap();

    // Cancelled from its page: the event and its confirmed bookings.
    b.goto(&format!("{}/organizer/events/{id}", s.base))
        .await
        .unwrap();
    b.click("form[action$='/cancel'] button").await.unwrap();
    b.wait_for_text(".heading-row", "CANCELLED", PATIENCE)
        .await
        .unwrap();
    let event = s
        .call(
            Method::GET,
            &format!("/api/v1/events/{id}"),
            Some(&login_token(&s, &email).await),
            None,
        )
        .await;
    assert_eq!(event.body["status"], "CANCELLED", "{}", event.body);

    // Past a page of events, the list goes on to the next page.
    let token = login_token(&s, &email).await;
    for n in 0..25 {
        let body = json!({
            "event_name": format!("Matinee {n:02}"), "description": "", "category": "Music",
            "location": "Lisbon", "event_date": "2031-07-01", "start_time": "15:00", "end_time": "17:00",
            "ticket_capacity": 10, "ticket_price": "9.00"
        });
        let r = s
            .call(Method::POST, "/api/v1/events", Some(&token), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    b.goto(&format!("{}/organizer", s.base)).await.unwrap();
    b.wait_for_text(".pager", "Page 1 of 2", PATIENCE).await.unwrap();
    assert_eq!(b.count("table tbody tr").await.unwrap(), 25);
    b.click(".pager a[rel=next]").await.unwrap();
    b.wait_for_text(".pager", "Page 2 of 2", PATIENCE).await.unwrap();
    assert_eq!(b.count("table tbody tr").await.unwrap(), 1);
    b.close().await;
}

/// Without a browser: every form needs the CSRF token its page set, the
/// session cookies are HttpOnly and SameSite, and the pages forbid
/// framing and scripts from elsewhere.
#[tokio::test]
async fn forms_need_their_csrf_token_and_cookies_stay_out_of_reach() {
    let s = TestStack::embedded(&[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{}/login", s.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let set_cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let csrf = set_cookie
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("tk_csrf="))
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));

    let email = format!("csrf-{}@example.com", uuid::Uuid::new_v4().simple());
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"email": email, "password": PASSWORD, "first_name": "C", "last_name": "S"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let login = |cookie: Option<String>, field: Option<String>| {
        let mut form = vec![("email", email.clone()), ("password", PASSWORD.to_string())];
        if let Some(f) = field {
            form.push(("csrf", f));
        }
        let mut req = http.post(format!("{}/login", s.base)).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", format!("tk_csrf={c}"));
        }
        req.send()
    };
    // No token, a token without its cookie, another page's token: refused,
    // and no session is started.
    for (cookie, field) in [
        (Some(csrf.clone()), None),
        (None, Some(csrf.clone())),
        (Some(csrf.clone()), Some("x".repeat(32))),
    ] {
        let r = login(cookie, field).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(!r
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("tk_access=")));
    }
    // With it: logged in, the tokens in HttpOnly cookies only.
    let r = login(Some(csrf.clone()), Some(csrf.clone())).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .collect();
    for name in ["tk_access=", "tk_refresh="] {
        let c = cookies.iter().find(|c| c.starts_with(name)).expect(name);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
    }
    let body = r.text().await.unwrap();
    assert!(!body.contains("eyJ"), "a token in the page");

    // Logging out with an access token that no longer passes: the request
    // is refreshed on the way in, and still every session cookie is ended.
    let refresh = cookies
        .iter()
        .find_map(|c| c.strip_prefix("tk_refresh="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let r = http
        .post(format!("{}/logout", s.base))
        .header(
            "cookie",
            format!("tk_csrf={csrf}; tk_access=expired; tk_refresh={refresh}"),
        )
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let ended: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .filter(|c| c.starts_with("tk_access=") || c.starts_with("tk_refresh="))
        .collect();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(ended.iter().all(|c| c.contains("Max-Age=0")), "{ended:?}");
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; ./scripts/test runs it with the servers (CI installs both)"]
async fn an_admin_finds_a_user_and_changes_their_roles() {
    let (admin_email, admin_password) = ("root@example.com", "bootstrap-pass-web");
    let s = TestStack::embedded(&[
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", admin_email),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", admin_password),
    ])
    .await;
    let (user_id, token, _) = s.user("CUSTOMER").await;
    let email = s
        .call(Method::GET, "/api/v1/auth/me", Some(&token), None)
        .await
        .text("email");
    let roles = || async {
        let admin = s
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": admin_email, "password": admin_password})),
            )
            .await
            .text("access_token");
        let r = s
            .call(
                Method::GET,
                &format!("/api/v1/auth/users?q={email}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.body["items"][0]["id"], user_id.as_str());
        r.body["items"][0]["roles"].clone()
    };

    let b = open_browser().await;
    b.goto(&format!("{}/login?next=/admin/users", s.base))
        .await
        .unwrap();
    b.fill_and_submit(
        &[("#email", admin_email), ("#password", admin_password)],
        "form[action='/login'] button",
    )
    .await
    .unwrap();
    b.wait_for_text("h1", "Users", PATIENCE).await.unwrap();
    b.fill_and_submit(&[("#q", &email)], "form[role=search] button")
        .await
        .unwrap();
    b.wait_for_text("main", "1 user matching", PATIENCE)
        .await
        .unwrap();
    b.click("button[title='Grant ORGANIZER']").await.unwrap();
    b.wait_for_text("button[title='Revoke ORGANIZER']", "ORGANIZER", PATIENCE)
        .await
        .unwrap();
    assert_eq!(roles().await, json!(["CUSTOMER", "ORGANIZER"]));
    b.screenshot("admin-users").await.unwrap();
    b.click("button[title='Revoke ORGANIZER']").await.unwrap();
    b.wait_for_text("button[title='Grant ORGANIZER']", "ORGANIZER", PATIENCE)
        .await
        .unwrap();
    assert_eq!(roles().await, json!(["CUSTOMER"]));

    // Every service answers the administrator about its dead letters.
    b.goto(&format!("{}/admin/dead-letters", s.base)).await.unwrap();
    let page = b.wait_for_text("main", "Dead letters", PATIENCE).await.unwrap();
    assert_eq!(page.matches("None waiting.").count(), 5, "{page}");
    b.close().await;
}

/// A customer renames themself and changes their password on the account
/// page: a wrong current password or a mistyped repeat is refused with the
/// field named; once changed, the customer stays signed in, the new
/// password logs in and the old one no longer does.
#[tokio::test]
#[ignore = "needs chromium and chromedriver; ./scripts/test runs it with the servers (CI installs both)"]
async fn a_customer_changes_name_and_password() {
    let s = TestStack::embedded(&[]).await;
    let b = open_browser().await;
    let email = format!("account-{}@example.com", uuid::Uuid::new_v4().simple());
    register(&b, &s.base, &email, "CUSTOMER").await;
    b.click("header a[href='/account']").await.unwrap();
    b.wait_for_text("#profile", &email, PATIENCE).await.unwrap();

    b.fill_and_submit(
        &[("#first_name", "Beatriz"), ("#last_name", "Lopes")],
        "form[action='/account/profile'] button",
    )
    .await
    .unwrap();
    b.wait_for_text("#saved", "Your name is saved", PATIENCE)
        .await
        .unwrap();
    let token = login_token(&s, &email).await;
    let me = s.call(Method::GET, "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(
        (me.text("first_name"), me.text("last_name")),
        ("Beatriz".to_string(), "Lopes".to_string())
    );

    let new_password = "amber-quarry-sailcloth-77";
    let change = |current: &'static str, again: &'static str| {
        let b = &b;
        async move {
            b.fill_and_submit(
                &[
                    ("#current_password", current),
                    ("#password", new_password),
                    ("#password_again", again),
                ],
                "form[action='/account/password'] button",
            )
            .await
            .unwrap();
        }
    };
    change("not-my-password-at-all", new_password).await;
    b.wait_for_text(
        "#current_password-error",
        "is not your current password",
        PATIENCE,
    )
    .await
    .unwrap();
    change(PASSWORD, "amber-quarry-sailcloth-78").await;
    b.wait_for_text("#password_again-error", "does not match", PATIENCE)
        .await
        .unwrap();
    change(PASSWORD, new_password).await;
    b.wait_for_text("#saved", "Your password is changed", PATIENCE)
        .await
        .unwrap();
    b.screenshot("account-password-changed").await.unwrap();
    // Still signed in, on a session made with the new password.
    b.goto(&format!("{}/bookings", s.base)).await.unwrap();
    b.wait_for_text("header", &email, PATIENCE).await.unwrap();
    assert!(b.url().await.unwrap().ends_with("/bookings"));

    let login = |password: &'static str| {
        let s = &s;
        let email = email.clone();
        async move {
            s.call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await
            .status
        }
    };
    assert_eq!(login(new_password).await, StatusCode::OK);
    assert_eq!(login(PASSWORD).await, StatusCode::UNAUTHORIZED);
    b.close().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; ./scripts/test runs it with the servers (CI installs both)"]
async fn a_customer_waits_their_turn_in_a_waiting_room_then_books() {
    let s = TestStack::embedded(&[]).await;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let event = published(&s, &organizer, "Queue Night", "Behind a waiting room.", 5).await;
    crate::waiting_rooms::open_room(&s, &organizer, event, 1).await;
    // Someone else holds the room's only turn.
    let (_, first, _) = s.user("CUSTOMER").await;
    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/bookings/waiting-rooms/{event}/places"),
            Some(&first),
            None,
        )
        .await;
    assert_eq!(r.body["state"], "ADMITTED", "{}", r.body);

    let b = open_browser().await;
    let email = format!("web-{}@example.com", uuid::Uuid::new_v4().simple());
    register(&b, &s.base, &email, "CUSTOMER").await;
    b.goto(&format!("{}/events/{event}", s.base)).await.unwrap();
    b.fill_and_submit(&[("#number_of_tickets", "1")], "form[action$='/book'] button")
        .await
        .unwrap();
    let queue = b.wait_for_text("#queue", "You are next", PATIENCE).await.unwrap();
    b.screenshot("waiting-room").await.unwrap();
    assert!(queue.contains("in the queue"), "{queue}");

    // The turn before theirs ends with a booking; the page moves on.
    let r = s
        .call_with(
            Method::POST,
            "/api/v1/bookings",
            Some(&first),
            Some(json!({"event_id": event, "number_of_tickets": 1, "payment_token": "tok_visa"})),
            &[("prefer", "wait=20")],
        )
        .await;
    assert_eq!(r.body["status"], "CONFIRMED", "{}", r.body);
    b.wait_for_text("#turn", "It is your turn", PATIENCE)
        .await
        .unwrap();
    b.fill_and_submit(&[("#number_of_tickets", "2")], "form[action$='/book'] button")
        .await
        .unwrap();
    b.wait_for_text("#booking .outcome", "CONFIRMED", PATIENCE)
        .await
        .unwrap();
    let url = b.url().await.unwrap();
    let id = url.rsplit('/').next().unwrap().to_string();
    let token = login_token(&s, &email).await;
    let booked = booking(&s, &token, &id).await;
    assert_eq!(
        (booked["status"].as_str(), booked["number_of_tickets"].as_i64()),
        (Some("CONFIRMED"), Some(2)),
        "{booked}"
    );
    b.close().await;
}
