//! A page's state in its URL, so a teacher can bookmark or share a demo:
//! `#/playground?model=fmnist-vit-tiny&variant=merged%3Auniform&sample=12&attack=pgd&eps=25.5&steps=10`.
//! A page reads the URL once when it opens and then rewrites it in place as its state
//! changes (`history.replaceState`: no new history entry, no `hashchange`).

use leptos::prelude::*;

use crate::components::{ATTACKS, AttackSettings};
use crate::{Ctx, Picked};

/// The `key=value` pairs after the `?` of the URL's hash.
pub struct Link(Vec<(String, String)>);

impl Link {
    /// The current URL's.
    pub fn current() -> Self {
        let hash = web_sys::window()
            .and_then(|w| w.location().hash().ok())
            .unwrap_or_default();
        let query = hash.split_once('?').map(|(_, q)| q).unwrap_or_default();
        Self(
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect(),
        )
    }

    /// The value of `key`, if given and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed, if given and valid.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.get(key)?.parse().ok()
    }
}

fn decode(s: &str) -> String {
    js_sys::decode_uri_component(&s.replace('+', " "))
        .map(String::from)
        .unwrap_or_else(|_| s.to_string())
}

/// Rewrites the URL as `#/page?key=value&…` (empty values left out) in place.
pub fn replace(page: &str, pairs: &[(&str, String)]) {
    let query = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", js_sys::encode_uri_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    let url = if query.is_empty() {
        format!("#/{page}")
    } else {
        format!("#/{page}?{query}")
    };
    if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
    }
}

/// An attack page's state (model, variant where `with_variant`, test image, attack, ε,
/// steps): taken from the URL where it names them (the invalid left at their defaults),
/// then kept in the URL as it changes. Call once as the page opens.
pub fn sync_attack_page(page: &'static str, ctx: Ctx, s: AttackSettings, with_variant: bool) {
    let link = Link::current();
    if let Some(m) = link.get("model") {
        let models = ctx.models.get_untracked();
        // Before the list has loaded the id is taken on trust; `refresh_models` replaces
        // an unknown one (and a variant the model lacks) with the defaults.
        if models.is_empty() || models.iter().any(|x| x.id == m) {
            if ctx.model.get_untracked() != m {
                ctx.model.set(m.to_string());
                ctx.variant.set(String::new());
            }
            if let Some(v) = link.get("variant").filter(|_| with_variant) {
                ctx.variant.set(v.to_string());
            }
            ctx.fill_default_variant();
        }
    }
    if let Some(id) = link.parse::<usize>("sample") {
        let same =
            matches!(ctx.picked.get_untracked(), Some(Picked::Sample { id: p, .. }) if p == id);
        if !same {
            ctx.wanted_sample.set(Some(id));
            ctx.picked.set(None);
        }
    }
    if let Some(a) = link
        .get("attack")
        .filter(|a| ATTACKS.iter().any(|(k, _)| k == a))
    {
        s.attack.set(a.to_string());
    }
    let linked_eps = link
        .parse::<f64>("eps")
        .filter(|e| (1.0..=64.0).contains(e));
    if let Some(e) = linked_eps {
        s.eps255.set(e);
    }
    if let Some(n) = link
        .parse::<usize>("steps")
        .filter(|n| (1..=200).contains(n))
    {
        s.steps.set(n);
    }
    // A tuned model's lesson opens at the budget it was trained against (a linked ε
    // wins on the first model), in the slider's half steps.
    let keep_linked = StoredValue::new(linked_eps.is_some());
    Effect::new(move |seen: Option<Option<String>>| {
        let info = ctx.model_info();
        let id = info.as_ref().map(|m| m.id.clone());
        if id.is_some() && seen.as_ref() != Some(&id) {
            let trained = info.as_ref().and_then(|m| m.train_eps).map(f64::from);
            if keep_linked.get_value() {
                keep_linked.set_value(false);
            } else if let Some(e) = trained {
                s.eps255
                    .set(((e * 255.0 * 2.0).round() / 2.0).clamp(1.0, 64.0));
            }
        }
        id
    });
    Effect::new(move |_| {
        let sample = match ctx.picked.get() {
            Some(Picked::Sample { id, .. }) => id.to_string(),
            // While a linked image loads, its id stays in the link.
            _ => ctx
                .wanted_sample
                .get()
                .map(|i| i.to_string())
                .unwrap_or_default(),
        };
        let variant = if with_variant {
            ctx.variant.get()
        } else {
            String::new()
        };
        replace(
            page,
            &[
                ("model", ctx.model.get()),
                ("variant", variant),
                ("sample", sample),
                ("attack", s.attack.get()),
                ("eps", s.eps255.get().to_string()),
                ("steps", s.steps.get().to_string()),
            ],
        );
    });
}
