//! Downloads through the SSRF-safe client against a local server.

mod common;

use hark_outbound::{
    assemblyai_download_error, download_to_file, DownloadLimits, OutboundClient, OutboundError,
    OutboundPolicy,
};
use std::time::Duration;

fn loopback_client() -> OutboundClient {
    OutboundClient::new(OutboundPolicy {
        allowlist: vec!["127.0.0.1/32".parse().unwrap()],
        ..OutboundPolicy::default()
    })
    .unwrap()
}

fn limits() -> DownloadLimits {
    DownloadLimits {
        max_bytes: 10_000_000,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn streams_a_file_to_disk() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    for path in ["/sized/1000000", "/chunked/1000000"] {
        let dest = dir.path().join("audio.bin");
        let n = download_to_file(&loopback_client(), &server.url(path), &dest, limits())
            .await
            .unwrap();
        assert_eq!(n, 1_000_000);
        let data = std::fs::read(&dest).unwrap();
        assert_eq!(data.len(), 1_000_000);
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, b)| *b == common::byte_at(i)));
    }
}

#[tokio::test]
async fn an_exact_fit_is_accepted() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a");
    let small = DownloadLimits {
        max_bytes: 50_000,
        ..limits()
    };
    let n = download_to_file(
        &loopback_client(),
        &server.url("/chunked/50000"),
        &dest,
        small,
    )
    .await
    .unwrap();
    assert_eq!(n, 50_000);
}

#[tokio::test]
async fn too_large_by_content_length_or_while_streaming() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let small = DownloadLimits {
        max_bytes: 50_000,
        ..limits()
    };
    for path in ["/sized/50001", "/chunked/200000"] {
        let dest = dir.path().join("big.bin");
        let err = download_to_file(&loopback_client(), &server.url(path), &dest, small)
            .await
            .unwrap_err();
        assert_eq!(err, OutboundError::TooLarge { limit: 50_000 }, "{path}");
        assert!(!dest.exists(), "the partial file of {path} is removed");
    }
}

#[tokio::test]
async fn a_stalled_download_times_out_and_is_removed() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("stall.bin");
    let quick = DownloadLimits {
        timeout: Duration::from_millis(500),
        ..limits()
    };
    let started = std::time::Instant::now();
    let err = download_to_file(&loopback_client(), &server.url("/stall"), &dest, quick)
        .await
        .unwrap_err();
    assert_eq!(err, OutboundError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dest.exists());
}

#[tokio::test]
async fn non_2xx_is_an_error_and_writes_nothing() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    for code in [404u16, 403, 500] {
        let dest = dir.path().join("x");
        let err = download_to_file(
            &loopback_client(),
            &server.url(&format!("/status/{code}")),
            &dest,
            limits(),
        )
        .await
        .unwrap_err();
        assert_eq!(err, OutboundError::Status(code));
        assert!(!dest.exists());
    }
}

#[tokio::test]
async fn default_policy_refuses_internal_targets() {
    let server = common::start().await;
    let port = server.addr.port();
    let client = OutboundClient::new(OutboundPolicy::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    // None of these is ever connected to: the refusal comes first.
    for url in [
        format!("http://127.0.0.1:{port}/sized/10"),
        format!("http://localhost:{port}/sized/10"),
        format!("http://LOCALHOST.:{port}/sized/10"),
        "http://10.1.2.3/a.wav".to_string(),
        format!("http://[::1]:{port}/sized/10"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/sized/10"),
        format!("http://[::ffff:7f00:1]:{port}/sized/10"),
        format!("http://2130706433:{port}/sized/10"),
        format!("http://0x7f.1:{port}/sized/10"),
        "http://0.0.0.0/".to_string(),
        "https://192.168.0.10/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://100.64.1.1/".to_string(),
    ] {
        let err = download_to_file(&client, &url, &dest, limits())
            .await
            .unwrap_err();
        assert!(
            matches!(err, OutboundError::Forbidden(_)),
            "{url}: expected Forbidden, got {err:?}"
        );
        assert!(!dest.exists());
    }
}

#[tokio::test]
async fn only_http_and_https() {
    let client = loopback_client();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    for url in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/a",
        "gopher://127.0.0.1/",
        "not a url",
        "http://",
    ] {
        let err = download_to_file(&client, url, &dest, limits())
            .await
            .unwrap_err();
        assert!(matches!(err, OutboundError::BadUrl(_)), "{url}: {err:?}");
    }
}

#[tokio::test]
async fn redirects_are_rechecked() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    let client = loopback_client();
    // An allowed redirect is followed.
    let n = download_to_file(&client, &server.url("/redirect/self"), &dest, limits())
        .await
        .unwrap();
    assert_eq!(n, 10);
    std::fs::remove_file(&dest).unwrap();
    // To another loopback address (IP literal) or its mapped form: refused; a file: URL is
    // not followed.
    for target in ["ip2", "mapped", "file"] {
        let err = download_to_file(
            &client,
            &server.url(&format!("/redirect/{target}")),
            &dest,
            limits(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                OutboundError::Forbidden(_) | OutboundError::BadUrl(_) | OutboundError::Status(302)
            ),
            "{target}: {err:?}"
        );
        if target != "file" {
            assert!(
                matches!(err, OutboundError::Forbidden(_)),
                "{target}: {err:?}"
            );
        }
        assert!(!dest.exists());
    }
    // A host allowed by name, redirecting to a name that resolves to loopback.
    let by_name = OutboundClient::new(OutboundPolicy {
        allowed_hosts: vec!["127.0.0.1".into()],
        ..OutboundPolicy::default()
    })
    .unwrap();
    let err = download_to_file(
        &by_name,
        &server.url("/redirect/localhost"),
        &dest,
        limits(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OutboundError::Forbidden(_)), "{err:?}");
    // Endless redirects stop.
    let err = download_to_file(&client, &server.url("/redirect/loop"), &dest, limits())
        .await
        .unwrap_err();
    assert_eq!(err, OutboundError::TooManyRedirects(5));
}

#[tokio::test]
async fn allowed_hosts_and_allow_private_open_the_way() {
    let server = common::start().await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    let named = OutboundClient::new(OutboundPolicy {
        allowed_hosts: vec!["localhost".into()],
        ..OutboundPolicy::default()
    })
    .unwrap();
    let url = format!("http://localhost:{port}/sized/123");
    assert_eq!(
        download_to_file(&named, &url, &dest, limits())
            .await
            .unwrap(),
        123
    );
    let open = OutboundClient::new(OutboundPolicy {
        allow_private: true,
        ..OutboundPolicy::default()
    })
    .unwrap();
    assert_eq!(
        download_to_file(&open, &server.url("/sized/7"), &dest, limits())
            .await
            .unwrap(),
        7
    );
}

#[test]
fn download_error_text_matches_assemblyai() {
    assert_eq!(
        assemblyai_download_error("https://example.com/a.mp3"),
        "Download error, unable to download https://example.com/a.mp3. Please make sure the file exists and is accessible from the internet."
    );
}
