//! Every reason the operator gives: the `Ready` condition's and its events'. `docs/reference.md`
//! lists them (tests/docs.rs compares the two lists with [`ConditionReason::ALL`] and
//! [`EventReason::ALL`]).

macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// Every reason of this kind.
            pub const ALL: &[$name] = &[$($name::$variant),*];

            /// The reason as Kubernetes shows it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),*
                }
            }
        }
    };
}

reasons!(
    /// Reasons of the `Ready` condition; a Warning event with the same reason goes out when the
    /// condition turns false for a new reason.
    ConditionReason {
        /// Every key is published where it should be and the signing key is in the Secret.
        KeysReady,
        /// Something the schema cannot check.
        InvalidSpec,
        /// A Secret of that name exists and is not this key's.
        SecretConflict,
        /// A ConfigMap of that name exists and is not this key's.
        ConfigMapConflict,
        /// ConfigMap writes failed in some namespaces.
        PublishFailed,
        /// The Secret could not be written.
        SecretWriteFailed,
    }
);

reasons!(
    /// Reasons of the events on a JwtSigningKey, besides the condition's.
    EventReason {
        /// A key was generated.
        KeyCreated,
        /// A key is published in every ConfigMap.
        KeyPublished,
        /// A next key now signs.
        KeyActivated,
        /// A key stopped signing.
        KeyRetired,
        /// A key is no longer published.
        KeyRemoved,
        /// A key was revoked.
        KeyRevoked,
        /// A new value of the rotate annotation was taken.
        RotationRequested,
        /// The revoke annotation names a kid this key does not publish.
        RevokeUnknownKey,
        /// The state in the Secret was rebuilt.
        StateRepaired,
        /// A ConfigMap held keys the operator never published.
        ForeignKeyRemoved,
        /// The keys moved to the Secret under a new name.
        SecretRenamed,
        /// Selected namespaces do not accept copies of this key.
        NamespaceNotAccepted,
    }
);
