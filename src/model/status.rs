//! The closed table of statuses and reasons a row shows (DESIGN §1.2).
//! Scripts match on these strings: they never change.

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::model::InvalidValue { what: $what, value: s.to_string(), problem: "not in the closed table" }),
                }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// The `status` column.
    Status, "status" {
        Provisioning => "provisioning",
        Online => "online",
        Degraded => "degraded",
        Failed => "failed",
        Stopped => "stopped",
        Paused => "paused",
        Removed => "removed",
    }
);

string_enum!(
    /// The `status_reason` column; each reason belongs to one status.
    Reason, "status reason" {
        Pulling => "pulling",
        Building => "building",
        Creating => "creating",
        Starting => "starting",
        WaitingReady => "waiting_ready",
        ImageNotFound => "image_not_found",
        RegistryAuth => "registry_auth",
        RegistryRateLimited => "registry_rate_limited",
        ImageBuildFailed => "image_build_failed",
        RolledBack => "rolled_back",
        CrashLoop => "crash_loop",
        ChangeBlocked => "change_blocked",
        InvalidSpec => "invalid_spec",
        TierNotAllowed => "tier_not_allowed",
        NameConflict => "name_conflict",
        StartFailed => "start_failed",
        ConfigMissing => "config_missing",
        ProvisionTimeout => "provision_timeout",
    }
);

impl Reason {
    /// The status this reason is shown with.
    pub fn status(self) -> Status {
        use Reason::*;
        match self {
            Pulling | Building | Creating | Starting | WaitingReady | ImageNotFound
            | RegistryAuth | RegistryRateLimited | ImageBuildFailed => Status::Provisioning,
            RolledBack => Status::Online,
            CrashLoop | ChangeBlocked => Status::Degraded,
            InvalidSpec | TierNotAllowed | NameConflict | StartFailed | ConfigMissing
            | ProvisionTimeout => Status::Failed,
        }
    }

    /// A refusal: the row cannot make a safe spec, or a name it needs is
    /// taken. Its message is the row's own fault or the name in the way.
    pub fn is_refusal(self) -> bool {
        use Reason::*;
        matches!(
            self,
            InvalidSpec | TierNotAllowed | NameConflict | ConfigMissing
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_and_reason_round_trips_through_its_string() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), *s);
        }
        for r in Reason::ALL {
            assert_eq!(r.to_string().parse::<Reason>().unwrap(), *r);
        }
        assert_eq!(Status::ALL.len(), 7);
        assert_eq!(Reason::ALL.len(), 18);
        assert!("Online".parse::<Status>().is_err());
    }

    #[test]
    fn reasons_belong_to_the_status_of_the_design_table() {
        assert_eq!(Reason::RolledBack.status(), Status::Online);
        assert_eq!(Reason::ChangeBlocked.status(), Status::Degraded);
        assert_eq!(Reason::ImageBuildFailed.status(), Status::Provisioning);
        assert_eq!(Reason::ProvisionTimeout.status(), Status::Failed);
    }
}
