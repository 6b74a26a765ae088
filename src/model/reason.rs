//! `Reason`: the short machine-readable code of every refusal the server answers
//! (`{"error": ..., "reason": "bad_time"}`) and the `reason` label of its rejects metric.
//!
//! In: nothing. Out: one enum whose codes are spelled once. Must not: carry messages
//! (those belong to the errors) or depend on anything.

/// The short machine-readable code of a refusal: the `reason` of every error body and
/// the `reason` label of `hotframe_ingest_rejects_total`. One list, so that a code is
/// spelled once and the API docs can list them all.
macro_rules! reasons {
    ($($variant:ident => $code:literal,)*) => {
        /// Why a request was refused, as a short code (`Reason::BadTime.as_str()` is `bad_time`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            $(#[doc = concat!("`", $code, "`")] $variant,)*
        }

        impl Reason {
            /// Every code, for docs and tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }
        }
    };
}

reasons! {
    AfterNotLater => "after_not_later",
    BadBody => "bad_body",
    BadDescription => "bad_description",
    BadEmail => "bad_email",
    BadFolded => "bad_folded",
    BadFormat => "bad_format",
    BadFrame => "bad_frame",
    BadGzip => "bad_gzip",
    BadJson => "bad_json",
    BadLabels => "bad_labels",
    BadLines => "bad_lines",
    BadMaxNodes => "bad_max_nodes",
    BadMultipart => "bad_multipart",
    BadPprof => "bad_pprof",
    BadPush => "bad_push",
    BadQuery => "bad_query",
    BadRequest => "bad_request",
    BadRequestsQuery => "bad_requests_query",
    BadSampleRate => "bad_sample_rate",
    BadSelection => "bad_selection",
    BadService => "bad_service",
    BadSettings => "bad_settings",
    BadStates => "bad_states",
    BadStep => "bad_step",
    BadText => "bad_text",
    BadTime => "bad_time",
    BadTitle => "bad_title",
    BodyTimeout => "body_timeout",
    BodyTooLarge => "body_too_large",
    Busy => "busy",
    DiskFull => "disk_full",
    EmptyBody => "empty_body",
    EmptyPush => "empty_push",
    EmptyRange => "empty_range",
    Forbidden => "forbidden",
    ImplausibleCount => "implausible_count",
    Internal => "internal",
    Invalid => "invalid",
    NoPrometheus => "no_prometheus",
    NoSamples => "no_samples",
    NotFound => "not_found",
    SeriesLimit => "series_limit",
    StackTooDeep => "stack_too_deep",
    StoreUnavailable => "store_unavailable",
    TooManyStacks => "too_many_stacks",
    Unauthorized => "unauthorized",
    UnsupportedMediaType => "unsupported_media_type",
    Upstream => "upstream",
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_unique_and_listed_in_the_api_docs() {
        let docs = include_str!("../../docs/api.md");
        let mut seen = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            let code = reason.as_str();
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{code}");
            assert!(seen.insert(code), "{code} twice");
            assert!(docs.contains(&format!("`{code}`")), "docs/api.md does not list `{code}`");
        }
    }
}
