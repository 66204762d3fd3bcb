//! Accounts: sign-up input rules, roles, who is asking, and whether an addressed account exists.

use crate::store::{Store, Tx};
use crate::{Error, Timestamp, UserId, char_len, parse_name};

string_enum! {
    /// What an account may do: `ADMIN` manages the catalog and coupons and sees every user.
    pub enum Role {
        User = "USER",
        Admin = "ADMIN",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// What login needs to check a password, and what its token carries.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: UserId,
    pub password_hash: String,
    pub role: Role,
    /// Bumped by every password change; a token issued under an older version is refused.
    pub token_version: i64,
}

/// What decides whether a well-signed token of an account is still good: the account exists, its
/// role is the token's, its token version is the token's, and the token's id was not logged out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub role: Role,
    pub token_version: i64,
    /// Ids (`jti`) of the account's logged-out tokens that have not expired yet.
    pub revoked: Vec<String>,
}

/// The claims of a well-signed, unexpired token, as [`TokenState::admits`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: UserId,
    pub role: Role,
    pub token_version: i64,
    /// The token's id; tokens of older versions of the server have none.
    pub jti: Option<String>,
    /// When the token expires (its `exp`).
    pub expires_at: Timestamp,
}

impl TokenState {
    /// Whether a token with these claims still stands for the account.
    pub fn admits(&self, claims: &TokenClaims) -> bool {
        self.role == claims.role
            && self.token_version == claims.token_version
            && claims.jti.as_ref().is_none_or(|jti| !self.revoked.contains(jti))
    }
}

impl TokenClaims {
    /// Who the token speaks for.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user_id,
            is_admin: self.role == Role::Admin,
        }
    }
}

/// A sign-up request after validation; the password is already hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub role: Role,
}

/// One `@`, a non-empty local part, a domain with a dot, no white space, at most 254 characters.
/// Returns the email lower-cased, as it is stored.
pub fn parse_email(raw: &str) -> Result<String, Error> {
    let invalid = || Error::validation("email must look like name@example.com (at most 254 characters)");
    if raw.is_empty() || char_len(raw) > 254 || raw.chars().any(char::is_whitespace) {
        return Err(invalid());
    }
    let mut parts = raw.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let domain_ok = domain.split('.').count() >= 2 && domain.split('.').all(|label| !label.is_empty());
    if local.is_empty() || !domain_ok {
        return Err(invalid());
    }
    crate::check_visible(raw, "email")?;
    Ok(raw.to_lowercase())
}

/// The length rule alone: 8 to 128 characters. The admin password of the environment is held
/// to it (an operator's choice, checked at start-up); every password a client chooses is held to
/// [`check_password`].
pub fn check_password_length(raw: &str) -> Result<(), Error> {
    let len = char_len(raw);
    if (8..=128).contains(&len) {
        Ok(())
    } else {
        Err(Error::validation("password must have 8 to 128 characters"))
    }
}

/// A password a client chooses (sign-up, password change): 8 to 128 characters, not one
/// character repeated, and not among the most common passwords ([`is_common_password`]).
pub fn check_password(raw: &str) -> Result<(), Error> {
    check_password_length(raw)?;
    let mut chars = raw.chars();
    if let Some(first) = chars.next()
        && chars.all(|c| c == first)
    {
        return Err(Error::validation("password must not be one character repeated"));
    }
    if is_common_password(raw) {
        return Err(Error::validation(
            "password is among the most common passwords; choose another",
        ));
    }
    Ok(())
}

/// Whether `raw`, case aside, is on the embedded list of the most common passwords (11,611 of 8
/// characters or more, from zxcvbn's list of the 30,000 most common; see the file's header).
pub fn is_common_password(raw: &str) -> bool {
    static LIST: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    let list = LIST.get_or_init(|| {
        include_str!("common_passwords.txt")
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    });
    list.contains(raw.to_lowercase().as_str())
}

pub fn parse_user_name(raw: &str) -> Result<String, Error> {
    parse_name(raw, 50, "name")
}

/// Who is asking: the holder of a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub is_admin: bool,
}

impl Actor {
    /// Whether this caller may see and act on what `owner` has: only its owner or an admin.
    pub fn may_access(&self, owner: UserId) -> bool {
        self.is_admin || self.user_id == owner
    }
}

/// A request about one account (`/users/{user_id}/…`) from a caller allowed to make it: the
/// account itself or an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressed {
    pub actor: Actor,
    pub user_id: UserId,
}

impl Addressed {
    /// The caller's own account exists: accounts are never deleted and the token came from it.
    /// Only an admin addressing another id needs the store to tell.
    pub fn is_own(&self) -> bool {
        self.actor.user_id == self.user_id
    }
}

/// `USER_NOT_FOUND` unless the addressed account exists. This is the one place that decides it;
/// the caller's own account costs no query.
pub async fn require_user(store: &impl Store, who: Addressed) -> Result<(), Error> {
    if who.is_own() || store.user(who.user_id).await?.is_some() {
        Ok(())
    } else {
        Err(Error::UserNotFound)
    }
}

/// [`require_user`] inside a unit of work.
pub async fn require_user_in(tx: &mut impl Tx, who: Addressed) -> Result<(), Error> {
    if who.is_own() || tx.user_exists(who.user_id).await? {
        Ok(())
    } else {
        Err(Error::UserNotFound)
    }
}

/// Registers a new account; `EMAIL_TAKEN` when the email is.
pub async fn sign_up(tx: &mut impl Tx, user: &NewUser, now: Timestamp) -> Result<UserId, Error> {
    tx.insert_user(user, now).await?.ok_or(Error::EmailTaken)
}

/// Logs a token out: its id is refused until it expires. A token with no id (issued by an
/// older version of the server) logs out every token of the account, as a password change does.
pub async fn log_out(tx: &mut impl Tx, claims: &TokenClaims) -> Result<(), Error> {
    match &claims.jti {
        Some(jti) => tx.revoke_token(jti, claims.user_id, claims.expires_at).await?,
        None => tx.bump_token_version(claims.user_id).await?,
    }
    Ok(())
}

/// Replaces the password whose hash is `current_hash` (the caller checked the current password
/// against it) and refuses every token issued before. `INVALID_CREDENTIALS` when the password
/// changed in between (another change won), `USER_NOT_FOUND` when the account is gone.
pub async fn change_password(tx: &mut impl Tx, user: UserId, current_hash: &str, new_hash: &str) -> Result<(), Error> {
    if tx.change_password(user, current_hash, new_hash).await? {
        Ok(())
    } else {
        Err(Error::InvalidCredentials)
    }
}

/// Makes sure `admin` can sign in as an admin: creates the account, or gives the existing one
/// with its email the admin role and this password (and refuses the tokens issued before).
pub async fn ensure_admin(tx: &mut impl Tx, admin: &NewUser, now: Timestamp) -> Result<UserId, Error> {
    Ok(tx.upsert_admin(admin, now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn actor(user: i64, is_admin: bool) -> Actor {
        Actor {
            user_id: UserId(user),
            is_admin,
        }
    }

    #[test]
    fn only_the_owner_or_an_admin_may_access() {
        assert!(actor(1, false).may_access(UserId(1)));
        assert!(!actor(1, false).may_access(UserId(2)));
        assert!(actor(1, true).may_access(UserId(2)));
    }

    #[test]
    fn only_another_account_needs_a_lookup() {
        let own = Addressed {
            actor: actor(1, false),
            user_id: UserId(1),
        };
        let other = Addressed {
            actor: actor(1, true),
            user_id: UserId(2),
        };
        assert!(own.is_own());
        assert!(!other.is_own());
    }

    #[test]
    fn accepts_ordinary_emails_and_lowercases_them() {
        assert_eq!(parse_email("Kim@Example.COM").unwrap(), "kim@example.com");
        assert!(parse_email("a.b+c@mail.example.kr").is_ok());
    }

    #[test]
    fn rejects_malformed_emails() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@b",
            "a@@b.com",
            "a@b@c.com",
            "a b@c.com",
            "a@b.com ",
            "a@.com",
            "a@b.",
            "a@b..com",
            "nul\u{0}x@example.com",
            "ali\u{200b}ce@example.com",
            "kim@exa\u{202e}mple.com",
            "\u{feff}kim@example.com",
            "kim\u{7}@example.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(long.chars().count(), 255);
        assert!(parse_email(&long).is_err());
        assert!(parse_email(&long[1..]).is_ok());
    }

    #[test]
    fn password_length_counts_characters() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("1234567x").is_ok());
        assert!(check_password(&"가나".repeat(64)).is_ok());
        assert!(check_password(&format!("{}다", "가나".repeat(64))).is_err());
    }

    #[test]
    fn common_and_repeated_passwords_are_refused() {
        for bad in [
            "password123",
            "Password123",
            "PASSWORD",
            "12345678",
            "qwertyuiop",
            "iloveyou",
            "aaaaaaaa",
            "        ",
            "가가가가가가가가",
        ] {
            assert!(check_password(bad).is_err(), "{bad:?} should be refused");
        }
        for good in [
            "user-password-1234",
            "correct horse battery",
            "password-1234",
            "aaaaaaab",
            "가나다라마바사아",
        ] {
            assert!(check_password(good).is_ok(), "{good:?} should be accepted");
        }
        // The operator's admin password is held to the length alone.
        assert!(check_password_length("password123").is_ok());
        assert!(check_password_length("1234567").is_err());
    }

    #[test]
    fn the_embedded_list_holds_at_least_ten_thousand_passwords_within_the_length_rule() {
        let entries: Vec<&str> = include_str!("common_passwords.txt")
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        assert!(entries.len() >= 10_000, "{} entries", entries.len());
        for entry in &entries {
            assert!(check_password_length(entry).is_ok(), "{entry:?}");
            assert!(is_common_password(entry));
            assert_eq!(*entry, entry.to_lowercase());
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_user_name("  Kim  ").unwrap(), "Kim");
        assert!(parse_user_name("   ").is_err());
        assert!(parse_user_name(&"名".repeat(50)).is_ok());
        assert!(parse_user_name(&"名".repeat(51)).is_err());
    }

    proptest! {
        #[test]
        fn any_email_with_white_space_is_rejected(a in "[a-z]{1,10}", b in "[a-z]{1,10}", ws in "[ \t\n]") {
            let email = format!("{a}{ws}@{b}.com");
            prop_assert!(parse_email(&email).is_err());
        }

        #[test]
        fn parsed_emails_are_lowercase(a in "[A-Za-z0-9]{1,20}", b in "[A-Za-z]{1,20}") {
            let parsed = parse_email(&format!("{a}@{b}.com")).unwrap();
            prop_assert_eq!(parsed.clone(), parsed.to_lowercase());
        }
    }
}
