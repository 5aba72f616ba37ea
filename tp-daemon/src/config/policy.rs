//! `[policy]`: the deadline horizon, claim window, clock skew and trustee
//! group sizes the TP publishes in its card (a [`Policy`]), and whether only
//! subscribers may claim. Kept apart because its settings are checked
//! against each other: a window plus skew beyond the horizon would make
//! every envelope unacceptable.

use serde::Deserialize;
use vtp_protocol::tp_card::Policy;

use super::fields::{given_or, Source, S};
use super::ConfigError;

/// The longest `max_deadline_secs`: the journal must keep every envelope
/// until its deadline.
const MAX_DEADLINE_SECS: u64 = 10 * 365 * 24 * 3600;
/// The largest `clock_skew_secs` (one day).
const MAX_CLOCK_SKEW_SECS: u64 = 24 * 3600;

/// `[policy]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    max_deadline_secs: Option<S<u64>>,
    min_claim_window_secs: Option<S<u64>>,
    clock_skew_secs: Option<S<u64>>,
    require_subscription: Option<bool>,
    min_threshold: Option<S<u64>>,
    max_trustees: Option<S<u64>>,
}

/// `[policy]` validated.
pub(super) struct PolicySection {
    pub policy: Policy,
    pub require_subscription: bool,
}

impl RawPolicy {
    pub(super) fn validate(self, src: &Source) -> Result<PolicySection, ConfigError> {
        let p = self;
        let d = Policy::default();
        let max_deadline = src.setting(
            &p.max_deadline_secs,
            d.max_deadline_secs,
            1..=MAX_DEADLINE_SECS,
            |v| {
                if v == 0 {
                    "[policy] `max_deadline_secs` must be at least 1".into()
                } else {
                    "[policy] `max_deadline_secs` is more than 10 years: the journal must keep \
                     (and the key ring honour) every envelope until its deadline"
                        .into()
                }
            },
        )?;
        let min_window = given_or(&p.min_claim_window_secs, d.min_claim_window_secs);
        if min_window == 0 || min_window >= max_deadline {
            let which = if p.min_claim_window_secs.is_some() {
                &p.min_claim_window_secs
            } else {
                &p.max_deadline_secs
            };
            return Err(src.at_or_in(
                which,
                "policy",
                format!(
                    "[policy]: need 0 < `min_claim_window_secs` ({min_window}) < \
                     `max_deadline_secs` ({max_deadline})"
                ),
            ));
        }
        let skew = src.setting(
            &p.clock_skew_secs,
            d.clock_skew_secs,
            ..=MAX_CLOCK_SKEW_SECS,
            |skew| format!("[policy] `clock_skew_secs` is {skew}; at most 86400 (one day)"),
        )?;
        // A recipient accepts only deadlines the window plus the skew away;
        // if that is beyond the horizon, no envelope could ever be accepted.
        if min_window + skew >= max_deadline {
            return Err(src.at_or_in(
                &p.clock_skew_secs,
                "policy",
                format!(
                    "[policy]: `min_claim_window_secs` + `clock_skew_secs` ({min_window} + {skew}) \
                     must be less than `max_deadline_secs` ({max_deadline}): recipients accept \
                     only deadlines at least that far away"
                ),
            ));
        }
        let max_group = vtp_protocol::shares::MAX_TRUSTEES as u64;
        let max_trustees =
            src.setting(&p.max_trustees, d.max_trustees.into(), 1..=max_group, |n| {
                format!("[policy] `max_trustees` is {n}; it must be 1 to {max_group}")
            })?;
        let min_threshold = src.setting(
            &p.min_threshold,
            d.min_threshold.into(),
            1..=max_trustees,
            |n| {
                format!(
                    "[policy] `min_threshold` is {n}; it must be 1 to `max_trustees` ({max_trustees})"
                )
            },
        )?;
        Ok(PolicySection {
            policy: Policy {
                max_deadline_secs: max_deadline,
                min_claim_window_secs: min_window,
                clock_skew_secs: skew,
                min_threshold: min_threshold as u8,
                max_trustees: max_trustees as u8,
            },
            require_subscription: p.require_subscription.unwrap_or(false),
        })
    }
}
