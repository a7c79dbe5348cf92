//! Incident cards: what a responder wants from a past incident at a glance (trigger, root
//! cause, what restored service, what was tried and did not help, what was ruled out, time to
//! detect and to mitigate), each field citing the lines it came from; and the trigger and
//! remediation classes used as facets.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::StepId;

/// One card field: a short text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardItem {
    /// The text, shortened to about one sentence.
    pub text: String,
    /// The step it was taken from.
    pub step_id: StepId,
    /// First line in the source file.
    pub line_start: u32,
    /// Last line in the source file, inclusive.
    pub line_end: u32,
}

/// A duration read off the timeline, with the rows it was measured between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Span {
    /// Whole minutes between the two rows.
    pub minutes: i64,
    /// Line of the row it starts at (the trigger or first symptom).
    pub from_line: u32,
    /// Line of the row it ends at (the detection or the mitigation).
    pub to_line: u32,
}

/// The card of one incident, computed when it is parsed and stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Card {
    /// One-line summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<CardItem>,
    /// What set the incident off (a deploy, a config push, an expiry...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<CardItem>,
    /// The root cause as the write-up states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<CardItem>,
    /// What restored service: the mitigations that helped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored_by: Vec<CardItem>,
    /// What was tried and did not help.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub did_not_help: Vec<CardItem>,
    /// Hypotheses checked and ruled out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ruled_out: Vec<CardItem>,
    /// From the trigger or first symptom to detection, when the timeline allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_detect: Option<Span>,
    /// From detection (or the first symptom) to the mitigation that restored service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_mitigate: Option<Span>,
    /// What class of change or failure set it off.
    pub trigger_class: TriggerClass,
    /// How service came back.
    pub remediation_class: RemediationClass,
}

macro_rules! class_enum {
    ($(#[$meta:meta])* $name:ident, $err:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize,
            Deserialize, JsonSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every class, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The snake_case name used in JSON, filters and the CLI.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let norm = s.trim().to_ascii_lowercase().replace(['-', ' ', '/'], "_");
                Self::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == norm)
                    .ok_or_else(|| {
                        let names: Vec<_> = Self::ALL.iter().map(|c| c.as_str()).collect();
                        format!(concat!("unknown ", $err, " {:?}; expected one of {}"), s, names.join(", "))
                    })
            }
        }
    };
}

class_enum!(
    /// What class of change or failure set an incident off.
    TriggerClass, "trigger class", {
        /// A deploy, release, migration or configuration change.
        DeployConfig => "deploy_config",
        /// Capacity or resource exhaustion: disk, memory, connections, quotas, load.
        Capacity => "capacity",
        /// A dependency or third party failed.
        Dependency => "dependency",
        /// A certificate, key, token or password expired or was rotated.
        CertificateSecret => "certificate_secret",
        /// DNS, routing, load balancing, network partitions.
        DnsNetwork => "dns_network",
        /// A database or storage system failed.
        DatabaseStorage => "database_storage",
        /// A software defect.
        CodeBug => "code_bug",
        /// The cloud provider or hardware failed.
        ProviderHardware => "provider_hardware",
        /// A person's mistake while operating the system.
        OperatorError => "operator_error",
        /// The write-up does not say, or the rules cannot tell.
        #[default]
        Unknown => "unknown",
    }
);

class_enum!(
    /// How service was restored.
    RemediationClass, "remediation class", {
        /// A change was rolled back or reverted.
        Rollback => "rollback",
        /// Configuration was corrected.
        ConfigFix => "config_fix",
        /// Capacity was added.
        ScaleUp => "scale_up",
        /// Something was restarted, rebooted or failed over.
        RestartFailover => "restart_failover",
        /// Traffic was shifted, drained, blocked or rate limited.
        TrafficShift => "traffic_shift",
        /// Code was fixed and deployed.
        SoftwareFix => "software_fix",
        /// It recovered by itself.
        SelfResolved => "self_resolved",
        /// The write-up does not say.
        #[default]
        Undisclosed => "undisclosed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in TriggerClass::ALL {
            assert_eq!(class.as_str().parse::<TriggerClass>(), Ok(*class));
            let json = serde_json::to_string(class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
        for class in RemediationClass::ALL {
            assert_eq!(class.as_str().parse::<RemediationClass>(), Ok(*class));
        }
        assert_eq!(
            "Restart/Failover".parse::<RemediationClass>(),
            Ok(RemediationClass::RestartFailover)
        );
        assert!(
            "nope"
                .parse::<TriggerClass>()
                .unwrap_err()
                .contains("deploy_config")
        );
    }
}
