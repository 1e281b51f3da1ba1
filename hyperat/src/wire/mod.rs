//! The HTTP contract of `hyperat serve`: every body its API answers (and a job's spec),
//! as plain serde types the server returns and the web UI reads. No burn types, so it
//! builds for wasm32; with the `schema` feature each type also derives a JSON Schema,
//! from which the server's OpenAPI document is generated.

mod inference;
mod jobs;
mod models;
mod report;
mod requests;

pub use inference::*;
pub use jobs::*;
pub use models::*;
pub use report::*;
pub use requests::*;

/// The schema generator the wire types derive with (for the OpenAPI document).
#[cfg(feature = "schema")]
pub use schemars;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Verdict;

    fn serde_name<T: serde::Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn names_are_the_serialized_names() {
        for s in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Done,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(s.name(), serde_name(s));
        }
        for k in [
            JobKind::Tune,
            JobKind::Pretrain,
            JobKind::Eval,
            JobKind::Report,
            JobKind::Merge,
        ] {
            assert_eq!(k.name(), serde_name(k));
        }
        for v in [
            Verdict::AlreadyWrong,
            Verdict::Fooled,
            Verdict::Held,
            Verdict::NothingFound,
        ] {
            assert_eq!(v.name(), serde_name(v));
        }
    }

    #[test]
    fn events_keep_their_type_tag_and_open_records() {
        let line = r#"{"type":"metrics","step":3,"method":"trades","loss":0.5,"note":"x"}"#;
        let e: JobEvent = serde_json::from_str(line).unwrap();
        let JobEvent::Metrics(r) = &e else {
            panic!("{e:?}")
        };
        assert_eq!((r.step, r.method.as_deref()), (Some(3), Some("trades")));
        assert_eq!(r.number("loss"), Some(0.5));
        assert_eq!(r.series(Series::Method), Some("trades"));
        let back = serde_json::to_value(&e).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(line).unwrap()
        );
        let p: JobEvent = serde_json::from_str(
            r#"{"type":"progress","done":1,"total":4,"message":"steps","eta_s":null}"#,
        )
        .unwrap();
        assert!(matches!(
            p,
            JobEvent::Progress(JobProgress {
                done: 1,
                total: 4,
                ..
            })
        ));
    }
}
