//! Accounts: the roles a token carries, and the news of a registration.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Customer,
    Organizer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "CUSTOMER",
            Role::Organizer => "ORGANIZER",
            Role::Admin => "ADMIN",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CUSTOMER" => Ok(Role::Customer),
            "ORGANIZER" => Ok(Role::Organizer),
            "ADMIN" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`; expected CUSTOMER, ORGANIZER or ADMIN"
            )),
        }
    }
}
/// Someone registered (drives the welcome notification).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub roles: Vec<Role>,
}

crate::message!(crate::exchanges::AUTH => UserRegistered);
