//! Charges that name a saved card instead of a token: the card's token
//! looked up, and only among the charged customer's own cards.

use ticketer_bus::HandleError;
use ticketer_contract::ProcessPayment;
use ticketer_db::Db;
use uuid::Uuid;

use crate::{
    provider::{charge_key, ChargeOutcome, PaymentProvider},
    store,
};

/// Puts each saved card's token into the charges that name one, if the
/// card is the charged customer's own (and not deleted, unless
/// `deleted_too`: a charge made before the deletion, asked about again). A
/// charge whose card is not found keeps an empty token: declined as
/// [`NO_SUCH_CARD`] without asking the provider.
pub(crate) async fn with_saved_cards(
    db: &Db,
    mut charges: Vec<&mut ProcessPayment>,
    deleted_too: bool,
) -> Result<(), HandleError> {
    charges.retain(|c| c.payment_method_id.is_some());
    if charges.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = charges.iter().filter_map(|c| c.payment_method_id).collect();
    let found = store::methods::tokens(db, &ids, deleted_too).await?;
    for c in charges {
        let card = c.payment_method_id.and_then(|m| found.get(&m));
        c.payment_token = match card {
            Some((owner, token)) if *owner == c.customer_id.to_string() => token.clone(),
            _ => String::new(),
        };
    }
    Ok(())
}

/// Why a charge naming a saved card that is not the customer's (or no
/// longer exists) is declined.
pub const NO_SUCH_CARD: &str = "payment_method_not_found";

/// What the provider says of a charge, or that its card was not found.
pub(crate) async fn charge_with(provider: &dyn PaymentProvider, c: &ProcessPayment) -> ChargeOutcome {
    if c.payment_token.is_empty() {
        return ChargeOutcome::Declined {
            reason: NO_SUCH_CARD.into(),
        };
    }
    provider
        .charge(charge_key(c.booking_id), c.amount, &c.currency, &c.payment_token)
        .await
}
