use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use ticketer_contract::{Incoming, Message};

use crate::HandleError;

/// Every message on the bus travels in this envelope (see CONTRACT.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub message_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    /// Ties together every message of one business flow (e.g. one booking).
    pub correlation_id: Uuid,
    /// The message that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// W3C trace context, so a consumer's span joins the producer's trace.
    pub traceparent: Option<String>,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// A new message that starts its own flow, in the current trace; an
    /// error if `payload` cannot be told in JSON (a map with keys that are
    /// not strings, say), never a message with an empty payload.
    pub fn new(kind: &str, payload: &impl Serialize) -> Result<Self, serde_json::Error> {
        let payload = serde_json::to_value(payload)?;
        let message_id = Uuid::now_v7();
        Ok(Envelope {
            message_id,
            kind: kind.to_string(),
            occurred_at: Utc::now(),
            correlation_id: message_id,
            causation_id: None,
            traceparent: ticketer_telemetry::current_traceparent(),
            payload,
        })
    }

    /// A message of the contract in a new envelope of its kind.
    pub fn of<M: Message>(msg: &M) -> Result<Self, serde_json::Error> {
        Self::new(M::KIND, msg)
    }

    /// The message as one of the kinds a consumer takes: `Ok(None)` for a
    /// kind it does not take; a payload that does not fit its kind is
    /// poison, not a retry.
    pub fn decode<T: Incoming>(&self) -> Result<Option<T>, HandleError> {
        T::decode(&self.kind, &self.payload).map_err(|e| {
            HandleError::Permanent(format!("{} payload does not match its type: {e}", self.kind))
        })
    }

    /// Places this message in a flow, e.g. the booking it belongs to.
    pub fn correlated(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Marks this message as a consequence of `cause`: same flow, same
    /// trace. The cause's trace wins over the current span's: a consumer
    /// applying a batch works under one span for messages of many traces,
    /// and hands each message to its handler with the context of that
    /// message's own consume span.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.correlation_id = cause.correlation_id;
        self.causation_id = Some(cause.message_id);
        if cause.traceparent.is_some() {
            self.traceparent = cause.traceparent.clone();
        }
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HandleError> {
        serde_json::from_slice(bytes)
            .map_err(|e| HandleError::Permanent(format!("not a message envelope: {e}")))
    }
}

/// A message ready to be published: where it goes and its encoded envelope.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Uuid,
    pub body: Vec<u8>,
}

impl Outgoing {
    /// Routes by message type, so consumers bind to the types they handle.
    pub fn new(exchange: &str, envelope: &Envelope) -> Self {
        Outgoing {
            exchange: exchange.to_string(),
            routing_key: envelope.kind.clone(),
            message_id: envelope.message_id,
            body: envelope.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_without_a_json_form_is_an_error_not_null() {
        let keys_not_strings: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(Envelope::new("Broken", &keys_not_strings).is_err());
    }

    #[test]
    fn envelope_round_trips_with_contract_field_names() {
        let env = Envelope::new("EventPublished", &serde_json::json!({"event_id": 7})).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        for field in [
            "message_id",
            "type",
            "occurred_at",
            "correlation_id",
            "causation_id",
            "traceparent",
            "payload",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(Envelope::from_bytes(&env.to_bytes()).unwrap(), env);
    }

    #[test]
    fn causation_keeps_the_flow() {
        let first = Envelope::new("BookingCreated", &1)
            .unwrap()
            .correlated(Uuid::new_v4());
        let next = Envelope::new("HoldTickets", &2).unwrap().caused_by(&first);
        assert_eq!(next.correlation_id, first.correlation_id);
        assert_eq!(next.causation_id, Some(first.message_id));
    }

    #[test]
    fn garbage_is_permanent() {
        assert!(matches!(
            Envelope::from_bytes(b"{nope"),
            Err(HandleError::Permanent(_))
        ));
        use ticketer_contract::TicketsHeld;
        ticketer_contract::incoming!(
            #[allow(dead_code)]
            enum Held {
                TicketsHeld,
            }
        );
        let env = Envelope::new("TicketsHeld", &serde_json::json!({"a": "b"})).unwrap();
        assert!(matches!(env.decode::<Held>(), Err(HandleError::Permanent(_))));
    }
}
