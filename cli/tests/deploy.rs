//! `skiff deploy` against a stand-in server on loopback that records the
//! request and answers like the manager: what the command sends and prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    content_type: String,
    body: Vec<u8>,
}

/// Serves one request with `status` and `answer`; the request comes out of the receiver.
fn server(status: u16, answer: &str) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = answer.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap().to_owned();
        let target = parts.next().unwrap().to_owned();
        let (mut content_type, mut length, mut chunked) = (String::new(), 0usize, false);
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            let v = v.trim();
            match k.to_ascii_lowercase().as_str() {
                "content-type" => content_type = v.to_owned(),
                "content-length" => length = v.parse().unwrap(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body).unwrap();
        }
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        tx.send(Seen {
            method,
            target,
            content_type,
            body,
        })
        .unwrap();
    });
    (url, rx)
}

fn skiff(url: &str, home: &Path, args: &[&str]) -> Output {
    let config = home.join("config.json");
    std::fs::write(&config, r#"{"token":"a-token"}"#).unwrap();
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .env("SKIFF_SERVER", url)
        .env("SKIFF_CONFIG", &config)
        .current_dir(home)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn recv(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the server got no request")
}

/// The files of a tar.gz body: path → content.
fn unpack(body: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(body));
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
        let path = e.path().unwrap().display().to_string();
        let mut content = String::new();
        e.read_to_string(&mut content).unwrap();
        out.push((path, content));
    }
    out
}

const CREATED: &str = r#"{"name":"my-func","version":1,"url":"http://localhost:8000/fn/alice/my-func",
"warnings":["main.ts:1:7 - TS2322: Type 'string' is not assignable to type 'number'."],
"resolved":{"hono":"npm:hono@4.6.1"}}"#;

#[test]
fn a_directory_is_sent_as_a_tar_gz_of_its_regular_files() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("My_Func");
    let w = |rel: &str, content: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    w("main.ts", "export default () => new Response('hi');\n");
    w("lib/util.ts", "export const x = 1;\n");
    w("src/server.ts", "export default {};\n");
    w(".env", "SECRET=1\n");
    w(".gitignore", "node_modules\n");
    w(".git/config", "[core]\n");
    w(".skiff/data", "x");
    w("node_modules/hono/index.js", "module.exports = 1;\n");
    symlink("main.ts", dir.join("alias.ts")).unwrap();

    let (url, rx) = server(201, CREATED);
    let dir_arg = dir.to_str().unwrap();
    let out = skiff(
        &url,
        home.path(),
        &["deploy", dir_arg, "--entry", "src/server.ts", "--strict"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let seen = recv(&rx);
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.target,
        "/func?name=my-func&entry=src/server.ts&check=strict"
    );
    assert_eq!(seen.content_type, "application/gzip");
    assert_eq!(
        unpack(&seen.body),
        [
            ("my-func/lib/util.ts", "export const x = 1;\n"),
            (
                "my-func/main.ts",
                "export default () => new Response('hi');\n"
            ),
            ("my-func/src/server.ts", "export default {};\n"),
        ]
        .map(|(p, c)| (p.to_owned(), c.to_owned()))
    );

    // what the manager makes of it: the directory's own layout, the entry found
    use skiff_manager::functions::archive;
    let dest = tempfile::tempdir().unwrap();
    let kind = archive::kind_of(Some(&seen.content_type)).unwrap();
    let unpacked = archive::unpack(
        kind,
        &seen.body,
        dest.path(),
        &archive::ArchiveLimits::default(),
    )
    .unwrap();
    assert_eq!(unpacked.files, ["lib/util.ts", "main.ts", "src/server.ts"]);
    assert_eq!(
        archive::pick_entry(&unpacked.files, Some("src/server.ts")).unwrap(),
        "src/server.ts"
    );

    // the output format of a file deploy, then warnings and resolutions on stderr
    assert_eq!(
        stdout,
        "created my-func version 1\nhttp://localhost:8000/fn/alice/my-func\n"
    );
    assert!(stderr.contains("skipped .env"), "{stderr}");
    assert!(stderr.contains("skipped alias.ts: links"), "{stderr}");
    assert!(stderr.contains("warning: main.ts:1:7 - TS2322"), "{stderr}");
    assert!(
        stderr.contains("resolved hono → npm:hono@4.6.1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(".gitignore") && !stderr.contains("node_modules"),
        "{stderr}"
    );
}

#[test]
fn the_current_directory_is_named_after_itself() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("greeter");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("index.ts"), "export default {};\n").unwrap();
    let (url, rx) = server(200, r#"{"name":"greeter","version":2,"url":"u"}"#);
    let config = home.path().join("config.json");
    std::fs::write(&config, r#"{"token":"a-token"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["deploy", "."])
        .env("SKIFF_SERVER", &url)
        .env("SKIFF_CONFIG", &config)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "updated greeter version 2\nu\n");
    // no warnings or resolutions in the answer: nothing more said
    assert_eq!(text(&out.stderr), "");
    let seen = recv(&rx);
    assert_eq!(seen.target, "/func?name=greeter");
    assert_eq!(
        unpack(&seen.body),
        [(
            "greeter/index.ts".to_owned(),
            "export default {};\n".to_owned()
        )]
    );
}

#[test]
fn a_link_out_of_the_directory_stops_the_deploy() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fn");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("main.ts"), "export default {};\n").unwrap();
    std::fs::write(home.path().join("secret.txt"), "s").unwrap();
    symlink("../secret.txt", dir.join("data.txt")).unwrap();
    let (url, rx) = server(201, CREATED);
    let out = skiff(&url, home.path(), &["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("data.txt is a link to outside"), "{stderr}");
    assert!(rx.try_recv().is_err(), "nothing may be sent");

    // a dangling link out is refused too
    std::fs::remove_file(dir.join("data.txt")).unwrap();
    symlink("/nonexistent/elsewhere", dir.join("data.txt")).unwrap();
    let out = skiff(&url, home.path(), &["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn a_file_deploy_can_be_strict_and_prints_warnings() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("my_func.ts");
    std::fs::write(&file, "export default {};\n").unwrap();
    let (url, rx) = server(201, CREATED);
    let out = skiff(
        &url,
        home.path(),
        &["deploy", file.to_str().unwrap(), "--strict"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = recv(&rx);
    assert_eq!(
        (seen.target.as_str(), seen.content_type.as_str()),
        (
            "/func?name=my-func&entry=my_func.ts&check=strict",
            "application/typescript"
        )
    );
    assert_eq!(seen.body, b"export default {};\n");
    assert!(text(&out.stderr).contains("warning: main.ts:1:7"));

    // an --entry that is not uploaded is caught before sending
    let dir = home.path().join("fn");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("main.ts"), "export default {};\n").unwrap();
    std::fs::write(dir.join(".hidden.ts"), "export default {};\n").unwrap();
    for entry in ["nope.ts", ".hidden.ts", "../fn/main.ts"] {
        let out = skiff(
            &url,
            home.path(),
            &["deploy", dir.to_str().unwrap(), "--entry", entry],
        );
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("no such file is uploaded"),
            "{}",
            text(&out.stderr)
        );
    }

    // --entry belongs to directories
    let out = skiff(
        &url,
        home.path(),
        &["deploy", file.to_str().unwrap(), "--entry", "x.ts"],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--entry is for directories"));
}

#[test]
fn the_server_refusal_is_shown() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fn");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("server.ts"), "export default {};\n").unwrap();
    let (url, _rx) = server(
        400,
        r#"{"error":{"code":"no_entry","message":"the archive has no entry point"}}"#,
    );
    let out = skiff(&url, home.path(), &["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the archive has no entry point (400 no_entry)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_empty_directory_is_not_sent() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fn");
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".env"), "A=1").unwrap();
    let (url, rx) = server(201, CREATED);
    let out = skiff(&url, home.path(), &["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has no files to upload"));
    assert!(rx.try_recv().is_err());
}

#[test]
fn deploy_help_tells_of_directories() {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["deploy", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    for needle in [
        "FILE|DIR",
        "--entry",
        "--strict",
        "--name",
        ".env",
        "main.ts, index.ts",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
