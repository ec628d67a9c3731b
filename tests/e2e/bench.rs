use std::os::unix::fs::FileExt;
use std::time::Duration;

use ferry_tests::procs::Proc;
use ferry_tests::{eventually, free_port, http_client};

/// The benchmark's floor (`ferry-null --journal`) answers a body only once it is in its journal
/// file, in order: a floor that skipped the write would flatter every ratio set against it.
#[tokio::test]
async fn the_floor_answers_only_what_its_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("floor.journal");
    let port = free_port();
    let args = ["--port", &port.to_string(), "--journal"]
        .map(String::from)
        .into_iter()
        .chain([journal.display().to_string()])
        .collect::<Vec<_>>();
    let _floor = Proc::spawn("ferry-null", &args, &[], &dir.path().join("floor.out"));
    let client = http_client().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    eventually("the floor to answer", Duration::from_secs(20), || async {
        client.post(&url).body("first").send().await.ok()
    })
    .await;

    let mut expected = b"first\n".to_vec();
    for i in 0..20 {
        let body = format!("{{\"uniqueid\":\"floor-{i}\"}}");
        let answer = client.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
        expected.extend_from_slice(body.as_bytes());
        expected.push(b'\n');
        let mut on_disk = vec![0; expected.len() + 1];
        std::fs::File::open(&journal)
            .unwrap()
            .read_exact_at(&mut on_disk, 0)
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&on_disk[..expected.len()]),
            String::from_utf8_lossy(&expected),
            "answer {i} came before its body was in the journal"
        );
        assert_eq!(on_disk[expected.len()], 0, "the rest is still zeros");
    }
}
