//! Directory uploads through the API, and the resolve step's network: what a
//! deploy may reach, checked after DNS by the egress proxy.

use serde_json::Value;
use skiff_manager::typecheck::settings::CheckerSettings;
use skiff_testkit::TestBackend;

use crate::helpers::{Options, TestApp, error_code, spawn_app, spawn_app_with};

skiff_testkit::on_both_backends!(
    a_directory_deploys_and_its_archive_reads_back,
    hostile_archives_are_refused_and_leave_nothing,
);

/// A tar.gz of `(path, content)` entries, written by hand where the tar
/// crate would refuse (`..`, absolute paths) so the server sees them as sent.
pub(crate) fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (path, data) in entries {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

pub(crate) async fn deploy_archive(
    app: &TestApp,
    token: &str,
    name: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/func?name={name}")))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn a_directory_deploys_and_its_archive_reads_back(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let archive = tar_gz(&[
        (
            "site/main.ts",
            b"import { page } from \"./lib/page.ts\";\nimport data from \"./data.json\" with { type: \"json\" };\nexport default () => new Response(page(data.title));\n",
        ),
        ("site/lib/page.ts", b"export const page = (t: string) => `<h1>${t}</h1>`;\n"),
        ("site/data.json", b"{\"title\":\"hello\"}\n"),
    ]);
    let r = deploy_archive(&app, &t, "site", archive.clone()).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["entry"], "main.ts", "{body}");
    assert_eq!(body["warnings"].as_array().map(Vec::len), Some(0), "{body}");
    let artifact = body["artifact_sha256"].as_str().unwrap().to_owned();

    let info: Value = app.get(&t, "/func/site").await.json().await.unwrap();
    assert_eq!(info["source_type"], "tar.gz");
    assert_eq!(info["artifact_sha256"], artifact.as_str());
    let code = app.get(&t, "/func/site/code").await;
    assert_eq!(code.headers()["content-type"], "application/gzip");
    assert_eq!(
        code.bytes().await.unwrap().to_vec(),
        archive,
        "the upload, byte for byte"
    );

    // The same upload builds the same artifact, byte for byte.
    let again: Value = deploy_archive(&app, &t, "site", archive)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["version"], 2);
    assert_eq!(again["artifact_sha256"], artifact.as_str());

    // ?entry= names another module, as the author sees the tree.
    let two = tar_gz(&[
        (
            "app/server.ts",
            b"export default () => new Response(\"server\");\n",
        ),
        (
            "app/main.ts",
            b"export default () => new Response(\"main\");\n",
        ),
    ]);
    let r = app
        .client
        .post(app.url("/func?name=two&entry=app/server.ts"))
        .bearer_auth(&t)
        .header("content-type", "application/gzip")
        .body(two)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["entry"], "server.ts", "{body}");
}

async fn hostile_archives_are_refused_and_leave_nothing(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let before = app.snapshot().await;
    let ok: &[u8] = b"export default () => new Response(\"x\");\n";
    for (what, archive, code) in [
        (
            "dot-dot",
            tar_gz(&[("main.ts", ok), ("../../etc/cron.d/x", ok)]),
            "bad_archive",
        ),
        (
            "absolute",
            tar_gz(&[("main.ts", ok), ("/etc/passwd", ok)]),
            "bad_archive",
        ),
        ("no entry", tar_gz(&[("readme.md", b"hi")]), "no_entry"),
        (
            "not gzip",
            b"this is not an archive".to_vec(),
            "bad_archive",
        ),
        (
            "bomb",
            tar_gz(&[("main.ts", ok), ("zeros.bin", &vec![0u8; 60 << 20])]),
            "bad_archive",
        ),
    ] {
        let r = deploy_archive(&app, &t, "evil", archive).await;
        assert_eq!(error_code(r, 400).await, code, "{what}");
    }
    assert_eq!(app.snapshot().await, before, "nothing was written");
    let leftovers: Vec<_> = std::fs::read_dir(app.data_dir.path().join("checks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("check-"))
        .collect();
    assert!(leftovers.is_empty(), "scratch dirs left: {leftovers:?}");
}

/// A host the operator allows, but whose name resolves to this machine's
/// loopback: the proxy refuses it after DNS (the compatibility suite shows a
/// trusted one, `SKIFF_EGRESS_TRUST`, working).
#[tokio::test]
async fn an_allowed_host_that_resolves_to_loopback_is_refused() {
    // Something to reach: a plain TCP listener (the TLS handshake never starts).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for host in ["localhost", "127.0.0.1"] {
        let app = spawn_app_with(
            TestBackend::Sqlite,
            Options {
                checker: CheckerSettings {
                    import_hosts: format!("{host}:{port}"),
                    ..CheckerSettings::default()
                },
                ..Options::default()
            },
        )
        .await;
        let t = app.token("alice").await;
        let src = format!(
            "import {{ x }} from \"https://{host}:{port}/mod.ts\";\nexport default () => new Response(x);\n"
        );
        let r = app.deploy(&t, "ssrf", &src).await;
        assert_eq!(r.status(), 400, "{host}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "import_not_allowed",
            "{host}: {body}"
        );
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("loopback"), "{host}: {msg}");
    }
    drop(listener);
}
