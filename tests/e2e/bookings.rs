use ferry_tests::{ApiOptions, TestApi, TestSim, order};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One LibCal booking, as the libcal source posts it (with some of LibCal's other fields).
fn booking(book_id: &str) -> Value {
    json!({
        "bookId": book_id, "fromDate": "2026-12-01T13:15:00-05:00",
        "toDate": "2026-12-01T13:30:00-05:00", "firstName": "Ann", "lastName": "Lee",
        "email": "ann@gwu.edu", "lid": 8827, "primary_id": "g00000002",
        "status": "Confirmed", "seat_id": 68162
    })
}

#[tokio::test]
async fn a_booking_is_placed_once_and_its_status_can_be_asked() {
    let api = TestApi::start().await;
    let (status, body) = api.post("/bookings", &booking("cs_1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let data = &body["data"];
    assert_eq!(data["new"], true);
    assert_eq!(data["kind"], "booking");
    assert_eq!(data["bookId"], "cs_1");
    assert_eq!(data["primary_id"], "G00000002", "trimmed and upper-cased");
    assert_eq!(data["status"], "placed");

    let (status, again) = api.post("/bookings", &booking("cs_1")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["data"]["new"], false);
    assert_eq!(again["data"]["id"], data["id"]);

    let mut moved = booking("cs_1");
    moved["toDate"] = json!("2026-12-01T14:00:00-05:00");
    let (status, body) = api.post("/bookings", &moved).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "BOOKID_CONFLICT");
    assert!(body["error"]["fields"]["toDate"].is_string(), "{body}");

    let (status, body) = api.get("/get_booking_status?bookId=cs_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "placed");
    assert_eq!(body["data"]["id"], data["id"]);
    let (status, body) = api.get("/get_booking_status?bookId=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "JOB_NOT_FOUND");
    let (status, body) = api.get("/get_booking_status").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["fields"]["bookId"].is_string(), "{body}");
}

#[tokio::test]
async fn a_booking_without_a_primary_id_is_kept_in_error_never_dropped() {
    let api = TestApi::start().await;
    let mut anonymous = booking("cs_2");
    anonymous.as_object_mut().unwrap().remove("primary_id");
    let (status, body) = api.post("/bookings", &anonymous).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["status"], "error");
    assert_eq!(body["data"]["reason_code"], "BOOKING_MISSING_PRIMARY_ID");
    let (_, q) = api.get("/queue?type=error").await;
    assert_eq!(q["data"]["length"], 1, "{q}");
    assert_eq!(q["data"]["jobs"][0]["bookId"], "cs_2");
    let leased = api.lease("w", 8, 0, 30_000).await;
    assert_eq!(leased["jobs"], json!([]), "never handed to a worker");
}

#[tokio::test]
async fn bad_booking_fields_are_named_and_nothing_is_placed() {
    let api = TestApi::start().await;
    let (status, body) = api.post("/bookings", &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
    for field in [
        "bookId",
        "fromDate",
        "toDate",
        "firstName",
        "lastName",
        "email",
        "lid",
    ] {
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field}: {body}"
        );
    }
    for (field, value) in [
        ("fromDate", json!("next tuesday")),
        ("toDate", json!("2026-12-01T12:00:00-05:00")),
        ("email", json!("nobody")),
        ("lid", json!("8827")),
    ] {
        let mut bad = booking("cs_bad");
        bad[field] = value.clone();
        let (status, body) = api.post("/bookings", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {body}");
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field}: {body}"
        );
    }
    let (_, q) = api.get("/queue?status=placed,error").await;
    assert_eq!(q["data"]["length"], 0, "{q}");
}

#[tokio::test]
async fn a_bookid_and_a_uniqueid_never_collide_and_the_queue_shows_each_kind() {
    let api = TestApi::start().await;
    api.create_ok(&order("shared-key")).await;
    let (status, body) = api.post("/bookings", &booking("shared-key")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["length"], 2, "{q}");
    let kinds: Vec<&str> = q["data"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["order_line", "booking"]);
    let (_, found) = api.get("/queue?q=ann@gwu").await;
    assert_eq!(found["data"]["jobs"][0]["kind"], "booking", "{found}");
    let (_, order_status) = api.status_of("shared-key").await;
    assert_eq!(order_status["data"]["kind"], "order_line");
}

#[tokio::test]
async fn a_tenant_whose_target_takes_no_bookings_refuses_them_clearly() {
    let sim = TestSim::start();
    let api = TestApi::with(ApiOptions::default().target(&sim.base())).await;
    let (status, body) = api.post("/bookings", &booking("cs_3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "KIND_NOT_TAKEN");
    let detail = body["error"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("erp_rest") && detail.contains("booking"),
        "{detail}"
    );
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(
            r#"ferry_intake_total{tenant="bennys-auto",kind="booking",result="refused"} 1"#
        ),
        "{metrics}"
    );
}
