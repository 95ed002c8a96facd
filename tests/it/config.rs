//! Broken configurations: exit 78, one line per problem naming the key and where it came from,
//! no panic, no stack trace.

use crate::helpers::{config_file, run_daemon, text};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const KEY: (&str, &str) = ("SESSION_REAPER_API__APIKEY", "k-123");

/// An environment, and the fragments expected in the report, each on its own line.
type BrokenCase = (Vec<(String, String)>, Vec<&'static str>);

fn broken_by_environment() -> Vec<BrokenCase> {
    vec![
        (env(&[]), vec!["api.apikey: no apikey configured"]),
        (
            env(&[KEY, ("SESSION_REAPER_API__DATA_CENTER", "mars")]),
            vec![
                "api.data_center: unknown data centre \"mars\" (one of us, eu, in, cn, au, jp, sa, ca) (from environment variable SESSION_REAPER_API__DATA_CENTER)",
            ],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_WORKER__RATE_PER_SECOND", "0")]),
            vec!["worker.rate_per_second: must be between 1 and"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_WORKER__LEASE", "-5s")]),
            vec!["worker.lease: expected a duration"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_RETRY__BASE_DELAY", "soon")]),
            vec!["retry.base_delay: expected a duration like 30s, 200ms or 15m, found \"soon\""],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_API__BASE_URL", "http://api.example.com")]),
            vec!["api.base_url: plain http:// would send the apikey in clear"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_API__APIKEY_FILE", "/nonexistent/key")]),
            vec!["api.apikey_file: set together with api.apikey"],
        ),
        (
            env(&[("SESSION_REAPER_API__APIKEY_FILE", "/nonexistent/key")]),
            vec!["api.apikey_file: cannot read /nonexistent/key"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_DATABASE__URL", "mysql://x")]),
            vec!["database.url: expected a URL starting with sqlite:"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_WORKER__CONCURENCY", "8")]),
            vec!["worker.concurency: unknown key (from environment variable SESSION_REAPER_WORKER__CONCURENCY)"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_LOG__FORMAT", "xml")]),
            vec!["log.format: expected \"json\" or \"pretty\""],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_WORKER__CONCURRENCY", "many")]),
            vec!["worker.concurrency: expected a whole number"],
        ),
        (
            env(&[KEY, ("SESSION_REAPER_HTTP__LISTEN", "everywhere")]),
            vec!["http.listen: expected an address"],
        ),
        (
            env(&[
                KEY,
                ("SESSION_REAPER_RETRY__BASE_DELAY", "10m"),
                ("SESSION_REAPER_RETRY__MAX_DELAY", "1s"),
            ]),
            vec!["retry.max_delay: must not be shorter than retry.base_delay"],
        ),
        // Several problems are all reported at once.
        (
            env(&[
                KEY,
                ("SESSION_REAPER_WORKER__BURST", "0"),
                ("SESSION_REAPER_API__TIMEOUT", "30"),
                ("SESSION_REAPER_API__DATA_CENTER", "xx"),
            ]),
            vec![
                "worker.burst: must be between 1",
                "api.timeout: expected a duration with a unit, like \"30s\"",
                "api.data_center: unknown data centre",
            ],
        ),
    ]
}

fn assert_reported(output: &std::process::Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{}", text(output));
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "one line per problem expected:\n{stderr}");
    for fragment in expected {
        assert!(
            lines.iter().any(|l| l.contains(fragment)),
            "no line with {fragment:?}:\n{stderr}"
        );
    }
    assert!(
        lines.iter().all(|l| l.starts_with("session-reaper: config: ")),
        "{stderr}"
    );
}

#[tokio::test]
async fn every_broken_setting_exits_78_with_one_line_per_problem_naming_key_and_source() {
    for (env, expected) in broken_by_environment() {
        let output = run_daemon(&["check-config"], &env).await;
        assert_reported(&output, &expected);
    }
}

#[tokio::test]
async fn problems_in_a_file_name_the_file_and_a_missing_file_is_an_error() {
    let (dir, path) = config_file("[api]\napikey = \"k\"\ndata_center = \"zz\"\n[worker]\nconcurrency = 0\nfoo = 1\n");
    let shown = path.display().to_string();
    let output = run_daemon(&["--config", &shown, "check-config"], &[]).await;
    let from_file = format!("(from file {shown})");
    assert_reported(
        &output,
        &[
            "api.data_center: unknown data centre",
            "worker.concurrency: must be between 1",
            "worker.foo: unknown key",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).matches(&from_file).count(),
        3,
        "{}",
        text(&output)
    );

    let missing = dir.path().join("missing.toml").display().to_string();
    let output = run_daemon(&["--config", &missing, "check-config"], &[]).await;
    assert_reported(&output, &["does not exist"]);

    std::fs::write(&path, "[api\nbroken").unwrap();
    let output = run_daemon(&["--config", &shown, "check-config"], &[]).await;
    assert_reported(&output, &["configuration:"]);
}

#[tokio::test]
async fn variables_override_the_file_and_nest_with_double_underscores() {
    let (_dir, path) = config_file("[worker]\nconcurrency = 4\nburst = 7\n[api]\napikey = \"from-file-key\"\n");
    let env = env(&[("SESSION_REAPER_WORKER__CONCURRENCY", "32")]);
    let output = run_daemon(&["--config", &path.display().to_string(), "check-config"], &env).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout.contains("concurrency = 32") && stdout.contains("burst = 7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("apikey = \"[redacted]\"") && !stdout.contains("from-file-key"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_apikey_comes_from_a_systemd_credential_when_nothing_else_names_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apikey"), "cred-key\n").unwrap();
    let output = tokio::task::spawn_blocking({
        let dir = dir.path().display().to_string();
        move || {
            crate::helpers::daemon(&["check-config"], &[])
                .env("CREDENTIALS_DIRECTORY", dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("apikey = \"[redacted]\""));
}
