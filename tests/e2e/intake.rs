use ferry_tests::{ApiOptions, TestApi, order};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_new_order_is_placed_and_its_status_can_be_asked_both_ways() {
    let api = TestApi::start().await;
    let (status, body) = api.create(&order("u-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["new"], true);
    assert_eq!(body["data"]["status"], "placed");
    assert_eq!(body["data"]["amount"], 5.0);

    let (status, body) = api.status_of("u-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "placed");
    assert_eq!(body["data"]["attempts"], 0);
    assert!(body["data"]["next_attempt_at"].is_string());

    let (status, legacy) = api.get("/check_order_status?unique_id=u-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        legacy,
        json!({"unique_id": "u-1", "status": "received", "reason": null}),
        "the original's shape and names"
    );

    let (status, body) = api.status_of("nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "JOB_NOT_FOUND");

    let (status, body) = api.get("/get_order_status").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["fields"]["uniqueid"].is_string(), "{body}");
}

#[tokio::test]
async fn the_same_uniqueid_answers_200_with_the_same_job_or_409_for_a_different_order() {
    let api = TestApi::start().await;
    let first = api.create_ok(&order("dup")).await;
    let (status, again) = api.create(&order("dup")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["data"]["id"], first["id"]);
    assert_eq!(again["data"]["new"], false);
    assert!(again["message"].as_str().unwrap().contains("already"));

    let mut other = order("dup");
    other["amount"] = json!(7);
    other["worksheet"] = json!("559");
    let (status, body) = api.create(&other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "UNIQUEID_CONFLICT");
    let fields = body["error"]["fields"].as_object().unwrap();
    let mut named: Vec<&str> = fields.keys().map(String::as_str).collect();
    named.sort();
    assert_eq!(
        named,
        ["amount", "worksheet"],
        "which fields differ: {body}"
    );

    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["length"], 1, "never a second job: {q}");
}

#[tokio::test]
async fn the_legacy_clients_double_encoded_body_with_old_field_names_is_accepted() {
    let api = TestApi::start().await;
    let legacy = json!({
        "unique_id": "oilmat-77", "dealer": "Bennys Auto", "case_nr": 558,
        "product_nr": 10, "product_amount": "2,5", "username": "ann", "password": "s3cret"
    });
    // What Python's requests.post(url, json=json.dumps(order)) sends.
    let body = serde_json::to_string(&legacy.to_string()).unwrap();
    let (status, answer) = api
        .send(
            api.http
                .post(format!("{}/create", api.base()))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let data = &answer["data"];
    assert_eq!(data["dealer"], "Bennys Auto");
    assert_eq!(data["uniqueid"], "oilmat-77");
    assert_eq!(data["worksheet"], "558");
    assert_eq!(data["amount"], 2.5);
    assert_eq!(data["username"], "ann");
    assert!(!answer.to_string().contains("s3cret"), "{answer}");
}

#[tokio::test]
async fn every_bad_field_is_named_in_a_400() {
    let api = TestApi::start().await;
    let (status, body) = api.create(&json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "VALIDATION_FAILED");
    for field in ["uniqueid", "worksheet", "product_nr", "amount"] {
        assert_eq!(body["error"]["fields"][field], "is required", "{body}");
    }
    assert!(
        body["error"]["fields"].get("workshop").is_none(),
        "the api is the workshop: {body}"
    );

    for (field, value) in [
        ("amount", json!(-1)),
        ("amount", json!(0)),
        ("amount", json!(1e12)),
        ("amount", json!("five")),
        ("uniqueid", json!("x".repeat(129))),
        ("worksheet", json!({"nested": true})),
        ("workshop", json!("Another Garage")),
    ] {
        let mut bad = order("u");
        bad[field] = value.clone();
        let (status, body) = api.create(&bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {body}");
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field}={value}: {body}"
        );
    }
    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["length"], 0, "nothing half-written: {q}");
}

#[tokio::test]
async fn wrong_content_type_malformed_json_and_oversized_bodies_are_refused_in_the_envelope() {
    let api = TestApi::start().await;
    let url = format!("{}/create", api.base());

    let (status, body) = api
        .send(
            api.http
                .post(&url)
                .header("content-type", "text/plain")
                .body("hi"),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "UNSUPPORTED_MEDIA_TYPE");

    let (status, body) = api
        .send(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"uniqueid\": "),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "MALFORMED_JSON");
    assert!(body["error"]["detail"].as_str().unwrap().contains("JSON"));

    let (status, body) = api
        .send(
            api.http
                .post(&url)
                .header("content-type", "application/json")
                .body("[1, 2]"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["code"], "MALFORMED_JSON",
        "not an object: {body}"
    );

    let mut big = order("big");
    big["note"] = json!("x".repeat(70 * 1024));
    let (status, body) = api.create(&big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

    let (status, body) = api
        .post(
            "/worker/lease",
            &json!({"worker_id": "w", "pad": "x".repeat(70 * 1024)}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["length"], 0, "{q}");
}

/// A body that arrives in pieces, as a slow client or a proxy sends it, is read whole: with a
/// `content-length` and chunked, each piece written on its own after a pause.
#[tokio::test]
async fn a_body_sent_in_pieces_is_read_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = TestApi::start().await;
    let mut big = order("pieces-1");
    big["note"] = json!("n".repeat(40 * 1024));
    let body = big.to_string();
    let (head, tail) = body.split_at(body.len() / 3);
    let (middle, tail) = tail.split_at(tail.len() / 2);
    let chunked = order("pieces-2").to_string();
    let (c1, c2) = chunked.split_at(chunked.len() / 2);
    let requests = [
        (
            format!("content-length: {}", body.len()),
            vec![head.to_string(), middle.to_string(), tail.to_string()],
        ),
        (
            "transfer-encoding: chunked".to_string(),
            vec![
                format!("{:x}\r\n{c1}\r\n", c1.len()),
                format!("{:x}\r\n{c2}\r\n", c2.len()),
                "0\r\n\r\n".to_string(),
            ],
        ),
    ];
    for (framing, pieces) in requests {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
            .await
            .unwrap();
        conn.write_all(
            format!(
                "POST /create HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                 {framing}\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        for piece in pieces {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            conn.write_all(piece.as_bytes()).await.unwrap();
            conn.flush().await.unwrap();
        }
        let mut answer = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            conn.read_to_string(&mut answer),
        )
        .await
        .expect("an answer")
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{framing}: {answer}");
    }
    let (status, one) = api.status_of("pieces-1").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let (status, two) = api.status_of("pieces-2").await;
    assert_eq!(status, StatusCode::OK, "{two}");
    let (_, q) = api.get("/queue").await;
    assert_eq!(q["data"]["length"], 2, "{q}");
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_accepts_again_once_drained() {
    let api = TestApi::with(ApiOptions::default().env("FERRY_MAX_QUEUE", "2")).await;
    api.create_ok(&order("a")).await;
    api.create_ok(&order("b")).await;
    let resp = api
        .http
        .post(format!("{}/create", api.base()))
        .json(&order("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "QUEUE_FULL");
    // A replay of a known job is still answered: it adds nothing.
    let (status, _) = api.create(&order("a")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = api.put("/clear_queue").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.create(&order("c")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["new"], true);
}

#[tokio::test]
async fn unknown_fields_are_accepted_and_named_and_refusals_are_counted() {
    let api = TestApi::start().await;
    let mut extra = order("extra-1");
    extra["usrname"] = json!("ann");
    let (status, body) = api.create(&extra).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("usrname"),
        "{body}"
    );
    for _ in 0..3 {
        let (status, _) = api.create(&json!({})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let metrics = api.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("ferry_intake_total{")
            && l.contains("result=\"refused\"")
            && l.ends_with(" 3")),
        "{metrics}"
    );
}
