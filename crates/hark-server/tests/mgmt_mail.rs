//! Invite mail: through SMTP when configured (a minimal SMTP server stands in for the
//! relay), and kept in the outbox, never lost, when the relay is unreachable.

mod common;
use common::mgmt::*;
use common::*;
use hark_core::Plan;
use hark_store::MemberStore;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Accepts SMTP sessions and records each message's DATA.
async fn fake_smtp() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 fake ESMTP\r\n").await;
                let mut in_data = false;
                let mut data = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            if let Ok(mut s) = sink.lock() {
                                s.push(std::mem::take(&mut data));
                            }
                            let _ = w.write_all(b"250 queued\r\n").await;
                        } else {
                            data.push_str(&line);
                            data.push('\n');
                        }
                        continue;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-fake\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("DATA") {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, received)
}

async fn invites_go_out_by_smtp(db: Db) {
    let (port, received) = fake_smtp().await;
    let ts = TestServer::start_with(db, None, |c| {
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.security = "none".into();
        c.smtp.from = "Hark <hark@example.com>".into();
        c.smtp.interval_secs = 1;
    })
    .await;
    let a = org(&ts, Plan::Payg).await;
    let email = unique_email("mailed");
    let r = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut delivered = None;
    for _ in 0..100 {
        delivered = received
            .lock()
            .expect("lock")
            .iter()
            .find(|m| m.contains(&email))
            .cloned();
        if delivered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = delivered.expect("the invite reached the SMTP server");
    assert!(message.contains("You are invited"), "{message}");
    assert!(
        message.contains("hark_inv_"),
        "the accept token is in the mail"
    );
    // Marked sent in the outbox.
    let mut sent = false;
    for _ in 0..50 {
        let out = ts.store.outbox(false).await.expect("outbox");
        if let Some(m) = out
            .iter()
            .find(|m| m.mail.to == email && m.sent_at.is_some())
        {
            assert!(
                !m.mail.body.contains("hark_inv_"),
                "a delivered body is cleared"
            );
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent);
    ts.stop().await;
}

async fn unreachable_relay_keeps_mail(db: Db) {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let ts = TestServer::start_with(db, None, |c| {
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.security = "none".into();
        c.smtp.from = "hark@example.com".into();
        c.smtp.interval_secs = 1;
    })
    .await;
    let a = org(&ts, Plan::Payg).await;
    let email = unique_email("waiting");
    let r = call(
        &ts,
        "POST",
        &format!("/accounts/{}/invites", a.account),
        Some(&a.owner.token),
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(r.status, 201);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let unsent = ts.store.outbox(true).await.expect("outbox");
    assert!(
        unsent.iter().any(|m| m.mail.to == email),
        "kept for the operator"
    );
    ts.stop().await;
}

both_databases!(invites_go_out_by_smtp, unreachable_relay_keeps_mail);
