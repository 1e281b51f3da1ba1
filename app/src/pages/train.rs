//! Train: start a HyperAT tuning run on the server, watch its curves live (the job's
//! event stream), cancel it, and see past runs. Finished runs become models.

use hyperat::wire::{
    JobCancelled, JobEvent, JobKind, JobList, JobProgress, JobRecord, JobRename, JobSpec,
    JobStatus, MetricRecord, Series, TuneRequest,
};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::components::{Busy, ErrorBox, ModelPicker};
use crate::{Ctx, api};

const METHODS: [(&str, &str); 4] = [
    ("pgd-at", "PGD-AT"),
    ("trades", "TRADES"),
    ("mart", "MART"),
    ("fgsm-rs", "FGSM-RS (fast AT)"),
];

/// A number field bound to a signal.
#[component]
fn Num(
    #[prop(into)] label: String,
    #[prop(into)] id: String,
    value: RwSignal<f64>,
    #[prop(into)] step: String,
) -> impl IntoView {
    view! {
        <label>{label}" "
            <input type="number" id=id step=step prop:value=move || value.get().to_string()
                on:input=move |ev| if let Ok(v) = event_target_value(&ev).parse() { value.set(v) } />
        </label>
    }
}

#[component]
pub fn Train() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let methods = RwSignal::new(vec!["pgd-at".to_string(), "trades".into(), "mart".into()]);
    let steps = RwSignal::new(60.0);
    let batch = RwSignal::new(32.0);
    let rank = RwSignal::new(4.0);
    let lr = RwSignal::new(1e-3);
    // Fashion-MNIST's usual budget, the one the shipped models were trained at.
    let eps255 = RwSignal::new(crate::components::DEFAULT_EPS255);
    let attack_steps = RwSignal::new(3.0);
    let method_warmup = RwSignal::new(0.0);
    let limit = RwSignal::new(5000.0);
    let name = RwSignal::new(String::new());
    let token = RwSignal::new(api::token().unwrap_or_default());
    let err = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let jobs = RwSignal::new(Vec::<JobRecord>::new());
    let watching = RwSignal::new(None::<String>);
    let metrics = RwSignal::new(Vec::<MetricRecord>::new());
    let progress = RwSignal::new(None::<JobProgress>);
    // The watched job's status, or what the stream is doing ("connecting…").
    let status = RwSignal::new(String::new());
    let source = StoredValue::new_local(None::<web_sys::EventSource>);

    let refresh = move || {
        leptos::task::spawn_local(async move {
            match api::get::<JobList>("/api/jobs").await {
                Ok(list) => jobs.set(list.jobs),
                Err(e) => err.set(Some(format!("job list: {e}"))),
            }
        })
    };
    refresh();

    let watch = move |id: String| {
        if let Some(es) = source.get_value() {
            es.close();
        }
        metrics.set(vec![]);
        progress.set(None);
        status.set("connecting…".into());
        watching.set(Some(id.clone()));
        let mut url = format!("/api/jobs/{id}/events");
        if let Some(t) = api::token() {
            url.push_str(&format!(
                "?access_token={}",
                js_sys::encode_uri_component(&t)
            ));
        }
        let es = match web_sys::EventSource::new(&url) {
            Ok(es) => es,
            Err(_) => {
                err.set(Some("cannot open the job's event stream".into()));
                return;
            }
        };
        let es2 = es.clone();
        let on_event = std::rc::Rc::new(move |event: JobEvent| match event {
            JobEvent::Snapshot { job } => status.set(status_name(job.status)),
            JobEvent::Metrics(r) => metrics.update(|m| m.push(r)),
            JobEvent::Progress(p) => progress.set(Some(p)),
            JobEvent::Status {
                status: s, error, ..
            } => {
                if let Some(e) = error {
                    err.set(Some(format!("the job failed: {e}")));
                }
                if s.terminal() {
                    es2.close();
                    ctx.refresh_models();
                }
                status.set(status_name(s));
                refresh();
            }
        });
        // Each event type has its own `event:` name; the data says the same in `type`.
        for kind in ["snapshot", "metrics", "progress", "status"] {
            let on_event = on_event.clone();
            let cb =
                Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
                    if let Some(e) = ev
                        .data()
                        .as_string()
                        .and_then(|s| serde_json::from_str::<JobEvent>(&s).ok())
                    {
                        on_event(e)
                    }
                });
            let _ = es.add_event_listener_with_callback(kind, cb.as_ref().unchecked_ref());
            cb.forget();
        }
        let onerror = Closure::<dyn Fn(web_sys::Event)>::new(move |_| {
            if !matches!(
                status.get_untracked().as_str(),
                "done" | "failed" | "cancelled"
            ) {
                status.set("connection lost; the browser retries…".into());
            }
        });
        es.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        onerror.forget();
        source.set_value(Some(es));
    };
    on_cleanup(move || {
        if let Some(es) = source.get_value() {
            es.close();
        }
    });

    let start = move |_| {
        api::set_token(&token.get_untracked());
        let m = methods.get_untracked();
        if m.is_empty() {
            err.set(Some("choose at least one defense method".into()));
            return;
        }
        let given = name.get_untracked().trim().to_string();
        let run_name = if given.is_empty() {
            default_name(m.len(), steps.get_untracked() as usize)
        } else {
            given
        };
        let spec = JobSpec {
            kind: JobKind::Tune,
            name: Some(run_name),
            model: Some(ctx.model.get_untracked()),
            variant: None,
            // These fields; the rest are the defaults the CLI has too.
            config: serde_json::to_value(TuneRequest {
                methods: m.join(","),
                steps: steps.get_untracked() as usize,
                batch_size: batch.get_untracked() as usize,
                rank: rank.get_untracked() as usize,
                lr: lr.get_untracked(),
                eps: Some((eps255.get_untracked() / 255.0) as f32),
                attack_steps: attack_steps.get_untracked() as usize,
                method_warmup: method_warmup.get_untracked() as usize,
                train_limit: Some(limit.get_untracked() as usize),
                holdout: 500,
                checkpoint_every: 20,
                ..TuneRequest::default()
            })
            .expect("plain data serializes"),
        };
        busy.set(true);
        err.set(None);
        leptos::task::spawn_local(async move {
            match api::post_json::<JobRecord>("/api/jobs", &spec).await {
                Ok(r) => {
                    refresh();
                    watch(r.id);
                }
                Err(e) => err.set(Some(e)),
            }
            busy.set(false);
        });
    };

    // DELETE cancels a queued or running job and deletes a finished one with its model.
    let cancel = move |id: String| {
        leptos::task::spawn_local(async move {
            if let Err(e) = api::delete::<JobCancelled>(&format!("/api/jobs/{id}")).await {
                err.set(Some(e));
            }
            refresh();
            ctx.refresh_models();
        })
    };
    let delete = move |id: String, label: String| {
        let sure = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message(&format!("Delete the run “{label}” and its model?"))
                    .ok()
            })
            .unwrap_or(false);
        if sure {
            cancel(id);
        }
    };
    let rename = move |id: String, label: String| {
        let Some(new) = web_sys::window()
            .and_then(|w| {
                w.prompt_with_message_and_default("New name for the run:", &label)
                    .ok()
            })
            .flatten()
        else {
            return;
        };
        leptos::task::spawn_local(async move {
            let body = JobRename { name: Some(new) };
            match api::patch_json::<JobRecord>(&format!("/api/jobs/{id}"), &body).await {
                Ok(_) => err.set(None),
                Err(e) => err.set(Some(e)),
            }
            refresh();
            ctx.refresh_models();
        })
    };

    view! {
        <h2>"Train"</h2>
        <p class="lead">"HyperAT tunes the frozen ViT with LoRAs that a small hypernetwork generates, one per defense method; each step samples one method. Runs are queued on the server; finished runs appear under Models."</p>
        <section class="card" aria-label="New tuning run">
            <div class="controls"><ModelPicker no_variant=true /></div>
            <fieldset><legend>"Defense methods"</legend>
                {METHODS.iter().map(|(k, l)| {
                    let k = k.to_string();
                    let k2 = k.clone();
                    view! {
                        <label><input type="checkbox" id=format!("method-{k}") prop:checked=move || methods.get().contains(&k)
                            on:change=move |ev| { let on = event_target_checked(&ev); let k = k2.clone();
                                methods.update(|m| { m.retain(|x| *x != k); if on { m.push(k) } }); } />" "{*l}</label>
                    }
                }).collect_view()}
            </fieldset>
            <div class="controls">
                <Num label="Steps" id="train-steps" value=steps step="1" />
                <Num label="Batch" id="train-batch" value=batch step="1" />
                <Num label="LoRA rank" id="train-rank" value=rank step="1" />
                <Num label="Learning rate" id="train-lr" value=lr step="0.0001" />
                <Num label="ε (/255)" id="train-eps" value=eps255 step="1" />
                <Num label="Attack steps" id="train-attack-steps" value=attack_steps step="1" />
                <span title="Steps that train the first ticked method alone before the methods are sampled: TRADES and MART from step 1 tend to flatten every prediction (see the results document)">
                    <Num label="First-method warm-up" id="train-method-warmup" value=method_warmup step="1" />
                </span>
                <Num label="Training images" id="train-limit" value=limit step="100" />
            </div>
            <div class="controls">
                <label>"Name "
                    <input type="text" id="train-name" maxlength="80"
                        placeholder=move || default_name(methods.get().len(), steps.get() as usize)
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                </label>
            </div>
            <div class="controls">
                <label title="Needed when the server was started with --admin-token">"Admin token "
                    <input type="password" id="token" autocomplete="off" prop:value=move || token.get()
                        on:input=move |ev| token.set(event_target_value(&ev)) />
                </label>
                <button id="train-start" class="primary" on:click=start disabled=move || busy.get()>"Start tuning"</button>
            </div>
            <Busy busy=busy.into() label="submitting…" />
            <ErrorBox msg=err.into() />
        </section>
        {move || watching.get().map(|id| view! {
            <section class="card" id="job-live" aria-label="Live run">
                <h3>{move || format!("{}: ", jobs.get().iter().find(|j| j.id == id).map_or(id.clone(), run_label))}<span id="job-status">{move || status.get()}</span></h3>
                {move || progress.get().map(|p| {
                    let (d, t) = (p.done as f64, (p.total as f64).max(1.0));
                    view! {
                        <progress id="job-progress" max=t value=d></progress>
                        // An estimate of time left only while the run runs.
                        <span class="meta" id="job-eta">{move || match status.get().as_str() {
                            "done" | "failed" | "cancelled" => format!(" stopped at {d:.0}/{t:.0}"),
                            _ => format!(" {d:.0}/{t:.0}{}", p.eta_s.map(|e| format!(", about {e:.0} s left")).unwrap_or_default()),
                        }}</span>
                    }
                })}
                <p class="meta" id="job-steps">{move || format!("{} steps reported", metrics.get().iter().filter(|r| r.kind.is_none()).count())}</p>
                <div class="charts">
                    <Chart title="loss" key="loss" metrics=metrics.into() unit=false />
                    <Chart title="clean accuracy (batch)" key="clean_acc" metrics=metrics.into() unit=true />
                    <Chart title="adversarial accuracy (batch)" key="adv_acc" metrics=metrics.into() unit=true />
                    {move || metrics.get().iter().any(|r| r.kind.as_deref() == Some("holdout")).then(|| view! {
                        <Chart title="hold-out robust accuracy (PGD-10), per model" key="robust_acc" kind="holdout" series=Series::Model metrics=metrics.into() unit=true />
                        <Chart title="hold-out clean accuracy, per model" key="clean_acc" kind="holdout" series=Series::Model metrics=metrics.into() unit=true />
                    })}
                    {move || metrics.get().iter().any(|r| r.kind.as_deref() == Some("diagnostics")).then(|| view! {
                        <Chart title="LoRA delta cosine between methods (1 = collapsed into one)" key="delta_cosine_mean" kind="diagnostics" series=Series::Kind metrics=metrics.into() unit=false />
                    })}
                </div>
            </section>
        })}
        <section class="card" aria-label="Run history">
            <h3>"Runs " <button on:click=move |_| refresh()>"refresh"</button></h3>
            <div class="table-wrap" tabindex="0" role="region" aria-label="runs"><table id="job-table">
                <thead><tr><th scope="col">"Run"</th><th scope="col">"Kind"</th><th scope="col">"Status"</th><th scope="col">"Progress"</th><th scope="col"></th></tr></thead>
                <tbody>
                    {move || jobs.get().into_iter().map(|j| {
                        let id = j.id.clone();
                        let label = run_label(&j);
                        let st = status_name(j.status);
                        let live = !j.status.terminal();
                        let (i1, i2) = (id.clone(), id.clone());
                        let (i3, l3, i4, l4) = (id.clone(), label.clone(), id.clone(), label.clone());
                        let (row_id, stored) = (id.clone(), j.progress.clone());
                        // The watched run's progress as its live panel shows it (the record
                        // on the server is saved every few seconds).
                        let shown = move || {
                            let p = match (watching.get() == Some(row_id.clone()), progress.get()) {
                                (true, Some(p)) => p,
                                _ => stored.clone(),
                            };
                            match (p.done, p.total) {
                                (d, t) if t > 0 => format!("{d}/{t}"),
                                _ => "—".into(),
                            }
                        };
                        view! {
                            <tr data-job=id.clone()>
                                <td title=id.clone()>{label.clone()}</td><td>{j.spec.kind.name()}</td>
                                <td class="job-state">{st.clone()}{j.error.as_ref().map(|e| format!(": {e}"))}</td>
                                <td class="job-progress">{shown}</td>
                                <td>
                                    <button on:click=move |_| watch(i1.clone())>"curves"</button>
                                    {if live {
                                        view! { <button class="job-cancel" on:click=move |_| cancel(i2.clone())>"cancel"</button> }.into_any()
                                    } else {
                                        view! {
                                            <button class="job-rename" on:click=move |_| rename(i3.clone(), l3.clone())>"rename"</button>
                                            <button class="job-delete" on:click=move |_| delete(i4.clone(), l4.clone())>"delete"</button>
                                        }.into_any()
                                    }}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table></div>
        </section>
    }
}

/// A run's name for people: the one it was given, else its id.
fn run_label(job: &JobRecord) -> String {
    job.spec.name.clone().unwrap_or_else(|| job.id.clone())
}

/// A status as the page shows it (the API's name).
fn status_name(s: JobStatus) -> String {
    s.name().to_string()
}

/// The name a run gets when none is typed: "tune · 3 methods · 60 steps · 10:42" (the
/// local time it was started).
fn default_name(methods: usize, steps: usize) -> String {
    let now = js_sys::Date::new_0();
    format!(
        "tune · {methods} method{} · {steps} steps · {:02}:{:02}",
        if methods == 1 { "" } else { "s" },
        now.get_hours(),
        now.get_minutes()
    )
}

/// One metric against the step, a line per value of the `series` field (the sampled
/// method of per-step records by default), over the records of one `kind` (per-step
/// records have none; `holdout` and `diagnostics` records are the run's evaluations).
#[component]
fn Chart(
    #[prop(into)] title: String,
    #[prop(into)] key: String,
    metrics: Signal<Vec<MetricRecord>>,
    unit: bool,
    #[prop(optional)] kind: Option<&'static str>,
    #[prop(default = Series::Method)] series: Series,
) -> impl IntoView {
    let lines = move || {
        let m: Vec<MetricRecord> = metrics
            .get()
            .into_iter()
            .filter(|r| r.kind.as_deref() == kind)
            .collect();
        let mut methods: Vec<String> = m
            .iter()
            .filter_map(|r| r.series(series).map(String::from))
            .collect();
        methods.sort();
        methods.dedup();
        let ys: Vec<f64> = m.iter().filter_map(|r| r.number(&key)).collect();
        let (lo, hi) = if unit {
            (0.0, 1.0)
        } else {
            (
                ys.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0),
                ys.iter().cloned().fold(0.0, f64::max).max(1e-9),
            )
        };
        let smax = m
            .iter()
            .filter_map(|r| r.step.map(|s| s as f64))
            .fold(1.0, f64::max);
        let lines: Vec<(usize, String, String)> = methods
            .iter()
            .enumerate()
            .map(|(i, meth)| {
                let pts = m
                    .iter()
                    .filter(|r| r.series(series) == Some(meth.as_str()))
                    .filter_map(|r| {
                        let (s, y) = (r.step? as f64, r.number(&key)?);
                        Some(format!(
                            "{:.1},{:.1}",
                            30.0 + 260.0 * s / smax,
                            110.0 - 100.0 * (y - lo) / (hi - lo)
                        ))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                (i, meth.clone(), pts)
            })
            .collect();
        (lines, lo, hi)
    };
    let lines2 = lines.clone();
    view! {
        <figure class="chart-box">
            <figcaption>{title.clone()}</figcaption>
            <svg viewBox="0 0 300 125" class="chart" role="img" aria-label=title>
                <line x1="30" y1="110" x2="290" y2="110" class="axis" />
                <line x1="30" y1="10" x2="30" y2="110" class="axis" />
                {move || { let (lines, lo, hi) = lines(); view! {
                    <text x="0" y="14" class="tick">{format!("{hi:.2}")}</text>
                    <text x="0" y="112" class="tick">{format!("{lo:.2}")}</text>
                    // Dots too: a line of one point (a short run's method) draws nothing.
                    {lines.into_iter().map(|(i, _, pts)| {
                        let dots = pts.split(' ').filter_map(|p| p.split_once(',')).map(|(x, y)| view! {
                            <circle cx=x.to_string() cy=y.to_string() r="1.6" class=format!("dot d{i}") />
                        }).collect_view();
                        view! { <polyline points=pts class=format!("series s{i}") fill="none" />{dots} }
                    }).collect_view()}
                }}}
            </svg>
            <p class="legend">{move || lines2().0.into_iter().map(|(i, m, _)| view! { <span class=format!("key s{i}")>{m}</span> }).collect_view()}</p>
        </figure>
    }
}
