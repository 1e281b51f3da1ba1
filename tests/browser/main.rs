//! End-to-end tests of the web UI: a real `hyperat serve` (the server library, on a
//! loopback socket, serving the shipped model and the Trunk-built `dist/`) driven through
//! headless Chromium by WebDriver. Needs `scripts/build-ui.sh` to have built `dist/` and
//! Debian's `chromium` + `chromium-driver` (scripts/test.sh installs and builds both).
//! Screenshots of every page go to `$HYPERAT_E2E_SHOTS` (default: a temporary folder,
//! printed).

mod webdriver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyperat::backend::CpuAutodiff;
use hyperat_server::serve::{AppState, Limits, ServeConfig, app};
use serde_json::Value;
use webdriver::{Browser, http};

/// One browser test at a time: two Chromiums and two trainings on two cores only slow
/// each other down.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    // Relative to the package root, where cargo runs tests: `env!("CARGO_MANIFEST_DIR")`
    // would name the clone that compiled the test, which a shared target dir reuses.
    Path::new("..").canonicalize().expect("the repository")
}

/// A server on a loopback port over the shipped models and `dist/`, with a fresh data
/// folder; runs until the test process ends.
fn serve(data: &Path) -> u16 {
    let dist = repo().join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "the web UI is not built: run scripts/build-ui.sh (scripts/test.sh does)"
    );
    let config = ServeConfig {
        models_dir: repo().join("public/models"),
        data_dir: data.to_path_buf(),
        dist_dir: dist,
        admin_token: None,
        limits: Limits::default(),
        site: Default::default(),
    };
    let state: Arc<AppState<CpuAutodiff>> =
        AppState::new(config, Default::default()).expect("server state");
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            axum::serve(
                listener,
                app(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
    });
    port
}

fn shots() -> PathBuf {
    let dir = std::env::var_os("HYPERAT_E2E_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hyperat-e2e-shots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn api(port: u16, path: &str) -> Value {
    let (status, body) = http(port, "GET", path, None).unwrap();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A server for one test at a time, on a loopback port over the shipped model and
/// `dist/`, with its own data folder.
struct Site {
    _serial: std::sync::MutexGuard<'static, ()>,
    _data: tempfile::TempDir,
    port: u16,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

fn site() -> Site {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let port = serve(data.path());
    Site {
        _serial: serial,
        _data: data,
        port,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits for the image the page opens on (the showcase's first); returns its sample id.
fn wait_lesson_image(b: &Browser) -> Value {
    b.wait(
        "the lesson image",
        120,
        "const e = document.querySelector('#picked-desc'); return e && e.dataset.sample",
    )
}

/// Waits for the playground's side-by-side verdict (both cards).
fn wait_duel(b: &Browser, what: &str) {
    b.wait(
        what,
        120,
        "return document.querySelectorAll('#duel .duel-card').length === 2",
    );
}

/// Opens the Playground, waits for the image it opens on and attacks it (both cards).
fn attack_lesson_image(b: &Browser, base: &str) {
    b.goto(&format!("{base}/"));
    wait_lesson_image(b);
    b.click("#attack-btn");
    wait_duel(b, "the side-by-side verdict");
}

/// Opens Compare, picks the first gallery image and waits for every variant's row and
/// the transfer matrix.
fn compare_first_sample(b: &Browser, base: &str) {
    b.goto(&format!("{base}/#/compare"));
    pick_first_sample(b);
    b.click("#compare-btn");
    b.wait(
        "the comparison",
        300,
        "return document.querySelectorAll('#compare-table tr.variant-row').length > 0 && document.querySelectorAll('#transfer-table tbody td').length > 0",
    );
}

/// Waits for the first gallery image and picks it.
fn pick_first_sample(b: &Browser) {
    b.wait(
        "the gallery",
        60,
        "return document.querySelectorAll('.gallery .thumb').length >= 12",
    );
    b.click(".gallery .thumb");
    b.wait(
        "the chosen image",
        10,
        "return document.querySelector('.thumb.chosen') !== null",
    );
}

/// Clicks Predict and returns (top-1 class name, the "where it ran" line, its backend).
fn predict(b: &Browser) -> (String, String, String) {
    b.click("#predict-btn");
    b.wait(
        "a prediction",
        120,
        "return document.querySelector('#predict-result .top1-name') !== null",
    );
    let name = b.text("#predict-result .top1-name");
    let line = b.text("#predict-where");
    let backend = b
        .js("return document.querySelector('#predict-where').dataset.backend")
        .as_str()
        .unwrap_or_default()
        .to_string();
    (name, line, backend)
}

/// Turns in-browser inference on and predicts; checks the answer against the server's.
fn in_browser_matches_server(b: &Browser) -> String {
    let (server_top, where_, _) = predict(b);
    assert!(where_.contains("on the server"), "{where_}");
    b.click("#in-browser");
    b.js("document.querySelector('#predict-where').dataset.backend = 'stale'");
    b.click("#predict-btn");
    b.wait(
        "an in-browser prediction",
        180,
        "const e = document.querySelector('#predict-where'); return e && e.dataset.backend !== 'stale' && e.textContent.includes('in this browser')",
    );
    let top = b.text("#predict-result .top1-name");
    let backend = b
        .js("return document.querySelector('#predict-where').dataset.backend")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        top, server_top,
        "in-browser top-1 ({backend}) differs from the server's"
    );
    backend
}

#[test]
fn the_ui_end_to_end() {
    let site = site();
    let (port, base) = (site.port, site.base.clone());
    let shots = shots();
    let models = api(port, "/api/models");
    let model = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "fmnist-vit-tiny")
        .expect("shipped model")
        .clone();
    let n_variants = model["variants"].as_array().unwrap().len();
    let b = Browser::start(false);

    // The page loads, with the shipped model selected.
    b.goto(&format!("{base}/"));
    b.wait("the model list", 60, "const s = document.querySelector('#model-select'); return s && s.value === 'fmnist-vit-tiny'");
    assert!(b.text("header").contains("HyperAT Studio"));
    // The static loading screen is in the page before the wasm runs, and gone after.
    let (_, page) = http(port, "GET", "/", None).unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("id=\"loading\"") && page.contains("<noscript>"),
        "{page}"
    );
    b.wait(
        "the loading screen to go",
        30,
        "return document.querySelector('#loading') === null",
    );
    // It opens on the image the server's showcase ranks first (both models right), not
    // on a hard-coded one.
    // (ranked at the page's default ε, 0.1, as the page asks for it)
    let lesson = api(
        port,
        &format!(
            "/api/models/fmnist-vit-tiny/showcase?n=1&eps={}",
            25.5f64 / 255.0
        ),
    );
    let want = lesson["images"][0]["sample"].as_u64().unwrap().to_string();
    let got = wait_lesson_image(&b);
    assert_eq!(got.as_str().unwrap(), want, "{lesson}");

    // A gallery image, attacked with PGD: both predictions and the perturbation.
    pick_first_sample(&b);
    b.click("#attack-btn");
    b.wait(
        "the attack result",
        120,
        "return document.querySelector('#attack-result #adv-pred .top1-name') !== null",
    );
    assert!(!b.text("#clean-pred .top1-name").is_empty());
    assert!(!b.text("#adv-pred .top1-name").is_empty());
    let pert = b.js("return document.querySelector('#perturbation').src");
    assert!(
        pert.as_str().unwrap().starts_with("data:image/png;base64,"),
        "{pert}"
    );
    // The same click attacked the undefended base too: both cards, each named, one line.
    let default_variant = model["default_variant"].as_str().unwrap().to_string();
    wait_duel(&b, "the side-by-side verdict");
    let names = b.js(
        "return [...document.querySelectorAll('#duel .duel-card')].map(c => c.dataset.variant)",
    );
    assert_eq!(names, serde_json::json!(["base", default_variant]));
    let line = b.text("#verdict-line");
    assert!(line.starts_with("base (undefended) "), "{line}");
    assert_eq!(
        line.matches(" held").count()
            + line.matches(" fooled").count()
            + line.matches(" wrong").count(),
        2,
        "{line}"
    );
    // What robustness costs, from the shipped model's evaluation, in words and figures.
    let evaluation = &model["evaluation"];
    assert!(
        evaluation["variants"].is_array(),
        "the shipped model has no evaluation.json"
    );
    let tradeoff = b.text("#duel .tradeoff");
    let pct = |variant: &str, key: &str| {
        let f = evaluation["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["variant"] == variant)
            .unwrap()[key]
            .as_f64()
            .unwrap();
        format!("{:.0}%", 100.0 * f)
    };
    for (v, k) in [
        ("base", "clean_acc"),
        (default_variant.as_str(), "robust_acc"),
    ] {
        assert!(tradeoff.contains(&pct(v, k)), "{tradeoff} lacks {v}'s {k}");
    }
    let verdict = b.js("return document.querySelector('#attack-verdict').dataset.verdict");
    assert!(
        ["fooled", "held", "nothing_found", "already_wrong"].contains(&verdict.as_str().unwrap()),
        "{verdict}"
    );
    let meta = b.text("#attack-result .meta");
    assert!(meta.contains("‖δ‖∞"), "{meta}");
    b.wait(
        "the confidence curve",
        120,
        "return document.querySelectorAll('#eps-curve circle').length === 14",
    );
    // One line per model, base first.
    let lines = b.js(
        "return [...document.querySelectorAll('#eps-curve polyline')].map(l => l.dataset.variant)",
    );
    assert_eq!(lines, serde_json::json!(["base", model["default_variant"]]));
    b.js("document.querySelector('#attack-result').scrollIntoView()");
    b.screenshot(&shots.join("playground.png"));

    // The later request wins: attack, switch the variant at once, attack again; the
    // first answer, arriving late, must not replace the second.
    let other = model["variants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find(|v| *v != "base" && *v != default_variant)
        .expect("a third variant")
        .to_string();
    b.click("#attack-btn");
    b.js(&format!("const s = document.querySelector('#variant-select'); s.value = '{other}'; s.dispatchEvent(new Event('change', {{bubbles: true}}));"));
    b.wait(
        "the results to clear",
        10,
        "return document.querySelector('#attack-result') === null && document.querySelector('#duel') === null",
    );
    b.click("#attack-btn");
    let shown = "return [document.querySelector('#attack-result')?.dataset.variant, document.querySelector('#duel .duel-card:last-child')?.dataset.variant]";
    wait_duel(&b, "the second attack");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(b.js(shown), serde_json::json!([other, other]));
    b.js(&format!("const s = document.querySelector('#variant-select'); s.value = '{default_variant}'; s.dispatchEvent(new Event('change', {{bubbles: true}}));"));

    // In-browser inference (no WebGPU flag: the CPU fallback) agrees with the server.
    let backend = in_browser_matches_server(&b);
    assert_eq!(backend, "CPU (WebAssembly)");
    // ... and says why not WebGPU.
    let line = b.text("#predict-where");
    assert!(line.contains("(no WebGPU: "), "{line}");
    // FGSM in the browser.
    b.js("const s = document.querySelector('#attack-select'); s.value = 'fgsm'; s.dispatchEvent(new Event('change', {bubbles: true}));");
    b.click("#attack-btn");
    b.wait("an in-browser attack", 120, "const m = document.querySelector('#attack-result .meta'); return m && m.textContent.includes('in this browser')");
    b.click("#in-browser");

    // An uploaded PNG is classified on the server.
    let png = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    let ds = hyperat::data::load("fashion-mnist", hyperat::data::Split::Test, None).unwrap();
    std::fs::write(
        png.path(),
        hyperat::data::encode_png(&ds.image(1), ds.shape).unwrap(),
    )
    .unwrap();
    b.send_keys("#upload", png.path().to_str().unwrap());
    b.wait(
        "the upload to be picked",
        20,
        "return document.querySelector('.thumb.chosen') === null",
    );
    // A preview of what the model sees; a dark background leaves "invert" off.
    b.wait(
        "the upload preview",
        20,
        "return document.querySelector('#upload-preview img') !== null",
    );
    assert_eq!(
        b.js("return document.querySelector('#invert').checked"),
        false
    );
    let (top, where_, _) = predict(&b);
    assert!(where_.contains("on the server"), "{where_}");
    assert!(ds.classes.contains(&top), "{top}");
    // No true label for an upload: nothing is marked "(true)", no ✓/✗.
    // ("(true)" is CSS content on the true class's row, `li.truth`.)
    let shown = b.text("#predict-result");
    assert!(!shown.contains('✓') && !shown.contains('✗'), "{shown}");
    assert_eq!(
        b.js("return document.querySelectorAll('#predict-result li.truth').length"),
        0
    );
    // With its true class named, the upload is judged like a test image.
    let truth = ds.labels[1] as usize;
    b.set_value("#upload-label", &truth.to_string());
    predict(&b);
    let shown = b.text("#predict-result");
    assert!(shown.contains('✓') || shown.contains('✗'), "{shown}");
    assert_eq!(
        b.js("return [...document.querySelectorAll('#predict-result li.truth .cls')].map(e => e.textContent)"),
        serde_json::json!([ds.classes[truth]])
    );
    // The same image dark on light: "invert" switches itself on.
    let light = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    let inverse: Vec<f32> = ds.image(1).iter().map(|p| 1.0 - p).collect();
    std::fs::write(
        light.path(),
        hyperat::data::encode_png(&inverse, ds.shape).unwrap(),
    )
    .unwrap();
    b.send_keys("#upload", light.path().to_str().unwrap());
    b.wait(
        "invert to switch on",
        20,
        "return document.querySelector('#invert').checked === true",
    );
    b.js("const i = document.querySelector('#invert'); i.checked = false; i.dispatchEvent(new Event('change', {bubbles: true}));");

    // A non-image upload gives a readable error.
    let txt = tempfile::Builder::new().suffix(".txt").tempfile().unwrap();
    std::fs::write(txt.path(), "this is not an image").unwrap();
    b.send_keys("#upload", txt.path().to_str().unwrap());
    b.wait(
        "the predict result to clear",
        20,
        "return document.querySelector('#predict-result') === null",
    );
    b.click("#predict-btn");
    let err = b.wait(
        "an error",
        60,
        "const e = document.querySelector('.error'); return e && e.textContent",
    );
    assert!(
        err.as_str().unwrap().contains("unsupported image format"),
        "{err}"
    );

    // Compare shows every variant and the transfer matrix.
    compare_first_sample(&b, &base);
    let rows = b.js("return document.querySelectorAll('#compare-table tr.variant-row').length");
    assert_eq!(rows.as_u64().unwrap() as usize, n_variants);
    let cells = b.js("return document.querySelectorAll('#transfer-table tbody td').length");
    assert_eq!(cells.as_u64().unwrap() as usize, n_variants * n_variants);
    // Above it, how distinct the shipped run's defenses are: the API's pairs and mean, and
    // the reading of that mean.
    let defenses = &model["defenses"];
    let note = b.text(".defenses");
    for p in defenses["pairs"]
        .as_array()
        .expect("the shipped run records its diagnostics")
    {
        let pair = format!(
            "{} / {} {:.2}",
            p["a"].as_str().unwrap().to_uppercase(),
            p["b"].as_str().unwrap().to_uppercase(),
            p["cosine"].as_f64().unwrap()
        );
        assert!(note.contains(&pair), "{note} lacks {pair}");
    }
    let mean = defenses["mean"].as_f64().unwrap();
    assert!(note.contains(&format!("(mean {mean:.2},")), "{note}");
    let reading = b.js("return document.querySelector('.defenses').dataset.reading");
    let expect = if mean < 0.7 {
        "distinct"
    } else if mean < 0.9 {
        "partly-alike"
    } else {
        "one-lora"
    };
    assert_eq!(reading, expect, "{note}");
    // The heat map colours by right/wrong (green/red), says so in a legend, and names
    // its axes; the ✓/✗ agrees with the colour in every cell.
    assert!(b.text("#heat-legend").contains("still right"));
    assert!(b.text("#transfer-table caption").contains("row's model"));
    let cells = b.js("return [...document.querySelectorAll('#transfer-table tbody td')].map(td => { const [r, g] = getComputedStyle(td).backgroundColor.match(/\\d+/g).map(Number); return [td.dataset.correct, g > r, td.textContent.startsWith('✓')]; })");
    for c in cells.as_array().unwrap() {
        let right = c[0] == "true";
        assert_eq!(c[1], right, "colour of {c}");
        assert_eq!(c[2], right, "mark of {c}");
    }
    b.js("document.querySelector('#compare-table').scrollIntoView()");
    b.screenshot(&shots.join("compare.png"));

    // A short tuning run started from Train streams progress and becomes a model.
    b.goto(&format!("{base}/#/train"));
    b.wait(
        "the train form",
        30,
        "return document.querySelector('#train-start') !== null",
    );
    for (id, v) in [
        ("#train-steps", "3"),
        ("#train-batch", "8"),
        ("#train-attack-steps", "1"),
        ("#train-limit", "64"),
        ("#train-rank", "2"),
        ("#train-eps", "8"),
    ] {
        b.set_value(id, v);
    }
    b.click("#train-start");
    b.wait("the run to finish", 600, "const s = document.querySelector('#job-status'); return s && ['done', 'failed', 'cancelled'].includes(s.textContent)");
    assert_eq!(
        b.text("#job-status"),
        "done",
        "errors: {}",
        b.js("return [...document.querySelectorAll('.error')].map(e => e.textContent).join(' | ')")
    );
    assert_eq!(b.text("#job-steps"), "3 steps reported");
    // A finished run promises no time left.
    let eta = b.text("#job-eta");
    assert!(eta.contains("stopped at") && !eta.contains("left"), "{eta}");
    b.wait(
        "the curves",
        10,
        "return document.querySelectorAll('#job-live polyline').length >= 3",
    );
    // Every sampled method is drawn, even one sampled once (a dot where no line is).
    let drawn = b.js("return document.querySelectorAll('#job-live .chart-box')[0].querySelectorAll('.legend .key').length");
    let sampled = b.js("return new Set([...document.querySelectorAll('#job-live .chart-box')[0].querySelectorAll('circle')].map(c => c.getAttribute('class'))).size");
    assert_eq!(drawn, sampled, "a legend entry per method, dots of each");
    b.screenshot(&shots.join("train.png"));
    let jobs = api(port, "/api/jobs");
    let job = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    // The run got a name for people, shown in the runs table; the table's progress
    // agrees with the live panel.
    let name = jobs["jobs"][0]["spec"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(name.starts_with("tune · 3 methods · 3 steps · "), "{name}");
    let row = format!("#job-table tr[data-job=\"{job}\"]");
    assert!(b.text(&row).contains(&name));
    assert_eq!(b.text(&format!("{row} .job-progress")), "3/3");
    // Renamed (the browser's prompt answered), then shown under Models by that name.
    b.js("window.prompt = () => 'Lesson 1 run'; window.confirm = () => true;");
    b.click(&format!("{row} .job-rename"));
    b.wait("the new name", 20, &format!("const r = document.querySelector('{row}'); return r && r.textContent.includes('Lesson 1 run')"));
    b.goto(&format!("{base}/#/models"));
    b.wait(
        "the new model",
        30,
        &format!("const m = document.querySelector('[data-model=\"{job}\"]'); return m && m.textContent.includes('Lesson 1 run')"),
    );
    // The shipped model's figures: one row per evaluated variant, and the sentence.
    let rows = b.js("return document.querySelectorAll('table.figures[data-model=\"fmnist-vit-tiny\"] tbody tr').length");
    assert_eq!(rows, evaluation["variants"].as_array().unwrap().len());
    assert!(
        b.text("[data-model=\"fmnist-vit-tiny\"] .tradeoff")
            .contains("robustness costs")
    );
    assert!(
        b.text("[data-model=\"fmnist-vit-tiny\"] .defenses")
            .contains("How different are its defenses?")
    );
    b.screenshot(&shots.join("models.png"));
    // Its lessons open at the budget it was trained against (8/255, not the page's 0.1).
    b.goto(&format!("{base}/#/playground"));
    b.set_value("#model-select", &job);
    b.wait(
        "ε at the run's budget",
        20,
        "return document.querySelector('#eps').value === '8'",
    );
    // Deleted from Train: gone from the runs and from the models.
    b.goto(&format!("{base}/#/train"));
    b.js("window.confirm = () => true;");
    b.click(&format!("{row} .job-delete"));
    b.wait(
        "the run deleted",
        20,
        &format!("return document.querySelector('{row}') === null"),
    );
    let models = api(port, "/api/models");
    assert!(
        models["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != job.as_str())
    );

    b.goto(&format!("{base}/#/learn"));
    b.click("#learn-demo");
    b.wait(
        "the live example",
        120,
        "return document.querySelectorAll('.side-by-side figure').length === 2",
    );
    // Both models were right on the demo's image: neither is "already wrong".
    let verdicts = b.js("return [...document.querySelectorAll('.side-by-side figcaption')].map(f => f.dataset.verdict)");
    for v in verdicts.as_array().unwrap() {
        assert!(
            ["fooled", "held", "nothing_found"].contains(&v.as_str().unwrap()),
            "{verdicts}"
        );
    }
    b.js("document.querySelector('#learn-demo').scrollIntoView()");
    b.screenshot(&shots.join("learn.png"));
    eprintln!("screenshots in {}", shots.display());
}

/// Whether the page scrolls sideways (its content wider than the window).
fn overflows(b: &Browser) -> Value {
    b.js("const w = window.innerWidth; const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('.table-wrap')).slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className); return document.documentElement.scrollWidth > w ? [document.documentElement.scrollWidth, w, wide] : null")
}

#[test]
fn every_page_fits_a_phone() {
    let site = site();
    let base = site.base.clone();
    let shots = shots();
    let b = Browser::start(false);
    // Playground after an attack (both cards, the curve), the widest it gets; first on a
    // 1280-px screen (the README's picture of the verdict), then on a phone.
    attack_lesson_image(&b, &base);
    b.js("document.querySelector('#duel').scrollIntoView()");
    b.screenshot(&shots.join("playground-verdict.png"));
    b.set_window(390, 844);
    assert_eq!(overflows(&b), Value::Null, "playground at 390 px");
    b.js("document.querySelector('#duel').scrollIntoView()");
    b.screenshot(&shots.join("playground-390.png"));
    // Compare with its tables (they scroll in their own box).
    compare_first_sample(&b, &base);
    assert_eq!(overflows(&b), Value::Null, "compare at 390 px");
    b.js("document.querySelector('#transfer-table').scrollIntoView()");
    b.screenshot(&shots.join("compare-390.png"));
    for page in ["train", "models", "learn"] {
        b.goto(&format!("{base}/#/{page}"));
        b.wait(
            "the page",
            30,
            "return document.querySelector('main h2') !== null",
        );
        if page == "learn" {
            b.click("#learn-demo");
            b.wait(
                "the live example",
                120,
                "return document.querySelectorAll('.side-by-side figure').length === 2",
            );
        }
        assert_eq!(overflows(&b), Value::Null, "{page} at 390 px");
        b.screenshot(&shots.join(format!("{page}-390.png")));
    }
}

#[test]
fn in_browser_inference_on_webgpu() {
    let site = site();
    let b = Browser::start(true);
    b.goto(&format!("{}/", site.base));
    b.wait("the model list", 60, "const s = document.querySelector('#model-select'); return s && s.value === 'fmnist-vit-tiny'");
    pick_first_sample(&b);
    let backend = in_browser_matches_server(&b);
    assert!(
        backend.starts_with("WebGPU"),
        "expected WebGPU, ran on {backend}"
    );
}

/// axe-core's script (installed by `scripts/setup.sh` with HYPERAT_SETUP_BROWSER=1).
fn axe_script() -> String {
    let path = std::env::var_os("HYPERAT_AXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/hyperat-tools/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core not found at {} ({e}): run HYPERAT_SETUP_BROWSER=1 scripts/setup.sh (scripts/test.sh does)",
            path.display()
        )
    })
}

/// The serious and critical accessibility violations axe-core finds on the page as it
/// is now, one line each (rule, what it asks, up to three elements).
fn axe_violations(b: &Browser, axe: &str) -> Vec<String> {
    b.js(&format!(
        "{axe}\n;window.__axe = null; window.axe.run(document, {{resultTypes: ['violations']}}).then(r => {{ window.__axe = r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ': ' + v.help + ' [' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ') + ']'); }}, e => {{ window.__axe = ['axe failed: ' + e]; }});"
    ));
    let found = b.wait(
        "axe-core's report",
        60,
        "return window.__axe && {v: window.__axe}",
    );
    found["v"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn axe_finds_no_serious_violations_on_any_page() {
    let site = site();
    let base = site.base.clone();
    let axe = axe_script();
    let b = Browser::start(false);
    let mut found = vec![];
    // The playground with results shown (both cards, the curve), Compare with its tables.
    attack_lesson_image(&b, &base);
    found.extend(
        axe_violations(&b, &axe)
            .into_iter()
            .map(|v| format!("playground: {v}")),
    );
    compare_first_sample(&b, &base);
    found.extend(
        axe_violations(&b, &axe)
            .into_iter()
            .map(|v| format!("compare: {v}")),
    );
    for page in ["train", "models", "learn"] {
        b.goto(&format!("{base}/#/{page}"));
        b.wait(
            "the page",
            30,
            "return document.querySelector('main h2') !== null",
        );
        found.extend(
            axe_violations(&b, &axe)
                .into_iter()
                .map(|v| format!("{page}: {v}")),
        );
    }
    // Learn's Present mode (the page it covers is already checked).
    b.click("#present-btn");
    b.find("#present");
    found.extend(
        axe_violations(&b, &axe)
            .into_iter()
            .map(|v| format!("present mode: {v}")),
    );
    assert!(
        found.is_empty(),
        "axe-core, serious or critical:\n{}",
        found.join("\n")
    );
}

/// The playground's controls as the page shows them: variant, attack, ε (/255), steps
/// and the chosen test image.
fn playground_state(b: &Browser) -> Value {
    b.js("const v = s => document.querySelector(s).value; return {variant: v('#variant-select'), attack: v('#attack-select'), eps: v('#eps'), steps: v('#steps'), sample: document.querySelector('#picked-desc').dataset.sample}")
}

#[test]
fn a_shared_link_opens_the_same_demo() {
    let site = site();
    let models = api(site.port, "/api/models");
    let model = &models["models"].as_array().unwrap()[0];
    // A variant other than the page's default, so that restoring it shows.
    let variant = model["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .find(|v| *v != "base" && *v != model["default_variant"])
        .expect("a second robust variant")
        .to_string();
    let b = Browser::start(false);
    b.goto(&format!("{}/#/playground", site.base));
    wait_lesson_image(&b);
    b.set_value("#variant-select", &variant);
    b.set_value("#attack-select", "fgsm");
    b.set_value("#eps", "12");
    b.set_value("#steps", "3");
    b.click("#sample-7");
    let url = b.wait(
        "the page's link",
        10,
        "return location.hash.includes('sample=7') && location.hash.includes('eps=12') && location.hash.includes('attack=fgsm') && location.href",
    );
    let url = url.as_str().unwrap().to_string();
    // The link in a fresh browser opens on the same state.
    drop(b);
    let b = Browser::start(false);
    b.goto(&url);
    b.wait(
        "the linked image",
        60,
        "const e = document.querySelector('#picked-desc'); return e && e.dataset.sample === '7'",
    );
    b.wait(
        "the linked variant",
        30,
        &format!(
            "return document.querySelector('#variant-select').value === {}",
            serde_json::to_string(&variant).unwrap()
        ),
    );
    let state = playground_state(&b);
    assert_eq!(
        state,
        serde_json::json!({"variant": variant, "attack": "fgsm", "eps": "12", "steps": "3", "sample": "7"}),
        "{url}"
    );
    // ... and attacks with it: the duel names the linked variant.
    b.click("#attack-btn");
    wait_duel(&b, "the side-by-side verdict");
    let names = b.js(
        "return [...document.querySelectorAll('#duel .duel-card')].map(c => c.dataset.variant)",
    );
    assert_eq!(names, serde_json::json!(["base", variant]));
    // A link with nonsense in it opens on the defaults instead.
    b.goto("about:blank");
    b.goto(&format!(
        "{}/#/playground?model=nope&variant=nope&attack=zzz&eps=999&steps=0&sample=99999999",
        site.base
    ));
    wait_lesson_image(&b);
    b.wait(
        "the default variant",
        30,
        &format!(
            "return document.querySelector('#variant-select').value === {}",
            model["default_variant"]
        ),
    );
    // The defaults: PGD-10 at the budget the model trained against (the slider's half
    // steps of 1/255), or the page's 0.1 for a model without one.
    let eps255 = model["train_eps"]
        .as_f64()
        .map_or(25.5, |e| (e * 255.0 * 2.0).round() / 2.0);
    let state = playground_state(&b);
    assert_eq!(
        (&state["attack"], &state["eps"], &state["steps"]),
        (
            &serde_json::json!("pgd"),
            &serde_json::json!(format!("{eps255}")),
            &serde_json::json!("10")
        )
    );
}

#[test]
fn present_mode_walks_the_lesson() {
    let site = site();
    let b = Browser::start(false);
    let step = |b: &Browser| {
        b.js("const p = document.querySelector('#present'); return p && p.dataset.step")
    };
    let wait_step = |b: &Browser, n: usize| {
        b.wait(
            &format!("step {n}"),
            20,
            &format!("const p = document.querySelector('#present'); return p && p.dataset.step === '{n}' && location.hash.includes('present={n}')"),
        );
    };
    let key = |b: &Browser, k: &str| {
        b.js(&format!(
            "window.dispatchEvent(new KeyboardEvent('keydown', {{key: '{k}', bubbles: true}}))"
        ));
    };
    b.goto(&format!("{}/#/learn", site.base));
    b.click("#present-btn");
    wait_step(&b, 1);
    assert!(b.text("#present h3").contains("Adversarial examples"));
    key(&b, "ArrowRight");
    wait_step(&b, 2);
    b.click("#present-next");
    wait_step(&b, 3);
    key(&b, "ArrowLeft");
    wait_step(&b, 2);
    // The last step runs the live example by itself.
    key(&b, "End");
    wait_step(&b, 5);
    b.wait(
        "the live example in the presentation",
        120,
        "return document.querySelectorAll('#present .side-by-side figure').length === 2",
    );
    b.screenshot(&shots().join("learn-present.png"));
    key(&b, "ArrowRight");
    assert_eq!(step(&b), serde_json::json!("5"), "past the last step");
    key(&b, "Escape");
    b.wait(
        "the page without the presentation",
        10,
        "return document.querySelector('#present') === null && !location.hash.includes('present')",
    );
    // A link to a step opens on it.
    b.goto("about:blank");
    b.goto(&format!("{}/#/learn?present=3", site.base));
    wait_step(&b, 3);
}
