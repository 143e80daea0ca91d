use std::time::Duration;

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands, Script,
};

use crate::{Bucket, CacheError, RateDecision};

/// How long one call may take, and one connection attempt (a busy machine
/// starting many processes at once can be slow to accept).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The production backend. The connection manager reconnects by itself.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
}

/// Token bucket in one round trip, atomic across gateway replicas. State is
/// a hash {tokens, ts}; time comes from the Redis server so replicas with
/// skewed clocks agree.
const TOKEN_BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_minute = tonumber(ARGV[1])
local capacity = math.max(tonumber(ARGV[2]), 1)
local rate = per_minute / 60000.0
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, wait}
";

const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl RedisCache {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        // Without timeouts, a reconnection made while Redis restarts (the
        // port accepts, the server does not answer yet) waits forever, and
        // every later call waits on it: found by `ticketer chaos`, where one
        // service's cache stayed down for minutes after Redis came back.
        // Every call here is a single small command or script.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(3)
            .set_max_delay(1_000);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisCache {
            conn,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        Ok(self.conn.clone().get(self.key(key)).await?)
    }

    pub(crate) async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        match ttl {
            Some(ttl) => {
                conn.pset_ex::<_, _, ()>(self.key(key), value, ttl.as_millis().max(1) as u64)
                    .await?
            }
            None => conn.set::<_, _, ()>(self.key(key), value).await?,
        }
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.conn.clone().del::<_, ()>(self.key(key)).await?;
        Ok(())
    }

    pub(crate) async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(reply.is_some())
    }

    pub(crate) async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CacheError> {
        let deleted: i64 = Script::new(DELETE_IF)
            .key(self.key(key))
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(deleted == 1)
    }

    /// Where the bucket `key` lives; its own namespace, apart from values.
    fn bucket_key(&self, key: &str) -> String {
        self.key(&format!("rate:{key}"))
    }

    pub(crate) async fn refill(&self, key: &str) -> Result<(), CacheError> {
        self.conn.clone().del::<_, ()>(self.bucket_key(key)).await?;
        Ok(())
    }

    pub(crate) async fn rate_limit(&self, key: &str, bucket: Bucket) -> Result<RateDecision, CacheError> {
        let (allowed, wait_ms): (i64, i64) = Script::new(TOKEN_BUCKET)
            .key(self.bucket_key(key))
            .arg(bucket.per_minute)
            .arg(bucket.burst)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            retry_after_secs: if allowed == 1 {
                0
            } else {
                (wait_ms.max(1) as u64).div_ceil(1000)
            },
        })
    }

    pub(crate) async fn ping(&self) -> Result<(), CacheError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    pub(crate) async fn clear(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn.keys(format!("{}*", self.prefix)).await?;
        if !keys.is_empty() {
            conn.del::<_, ()>(keys).await?;
        }
        Ok(())
    }
}
