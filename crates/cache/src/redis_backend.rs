use std::time::Duration;

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands, Script,
};

use crate::{
    room::{Place, RoomRule, PLACE_KEPT},
    Bucket, CacheError, RateDecision,
};

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

/// A waiting room's step in one round trip, the same rules as
/// [`crate::room::Room`] on the Redis server's clock. KEYS: the room's
/// counters (hash: issued, admitted), its claims (sorted set: number by
/// expiry), the buyer's place (number), the numbers whose buyers left
/// while waiting (set). ARGV: the step (join, place,
/// leave, admit), admitted at once, claim ms, place ms. Returns {kind,
/// number, ms}: kind 0 no place, 1 waiting (ms = numbers ahead), 2
/// admitted (ms = claim left), 3 lapsed; for admit and leave, {0,
/// admitted, 0}.
const ROOM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local step = ARGV[1]
local at_once = tonumber(ARGV[2])
local claim = tonumber(ARGV[3])
local kept = tonumber(ARGV[4])
local function admit()
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local issued = tonumber(redis.call('HGET', KEYS[1], 'issued') or '0')
  local first = tonumber(redis.call('HGET', KEYS[1], 'admitted') or '0')
  local admitted = first
  local held = redis.call('ZCARD', KEYS[2])
  while admitted < issued and held < at_once do
    admitted = admitted + 1
    if redis.call('SREM', KEYS[4], admitted) == 0 then
      redis.call('ZADD', KEYS[2], now + claim, admitted)
      held = held + 1
    end
  end
  if admitted > first then
    redis.call('HSET', KEYS[1], 'admitted', admitted)
  end
  return admitted
end
local function place_of(n, admitted)
  if n > admitted then
    return {1, n, n - admitted - 1}
  end
  local until_ms = redis.call('ZSCORE', KEYS[2], n)
  if until_ms then
    return {2, n, math.max(0, tonumber(until_ms) - now)}
  end
  return {3, n, 0}
end
-- A room nobody touches for as long as a place is kept is forgotten.
redis.call('PEXPIRE', KEYS[1], kept)
redis.call('PEXPIRE', KEYS[2], kept)
redis.call('PEXPIRE', KEYS[4], kept)
if step == 'admit' then
  return {0, admit(), 0}
end
if step == 'leave' then
  local n = tonumber(redis.call('GET', KEYS[3]))
  if n then
    redis.call('DEL', KEYS[3])
    if n > tonumber(redis.call('HGET', KEYS[1], 'admitted') or '0') then
      redis.call('SADD', KEYS[4], n)
    else
      redis.call('ZREM', KEYS[2], n)
    end
  end
  return {0, admit(), 0}
end
local admitted = admit()
local n = tonumber(redis.call('GET', KEYS[3]))
if step == 'place' then
  if not n then
    return {0, 0, 0}
  end
  return place_of(n, admitted)
end
if n then
  local p = place_of(n, admitted)
  if p[1] ~= 3 then
    return p
  end
end
n = redis.call('HINCRBY', KEYS[1], 'issued', 1)
redis.call('SET', KEYS[3], n, 'PX', kept)
return place_of(n, admit())
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

    /// One step of the event's waiting room (see [`ROOM`]).
    pub(crate) async fn room(
        &self,
        step: &str,
        event: i64,
        user: &str,
        rule: RoomRule,
    ) -> Result<(i64, u64, u64), CacheError> {
        let room = self.key(&format!("room:{event}"));
        let (kind, number, ms): (i64, u64, u64) = Script::new(ROOM)
            .key(&room)
            .key(format!("{room}:claims"))
            .key(format!("{room}:place:{user}"))
            .key(format!("{room}:gone"))
            .arg(step)
            .arg(rule.admitted_at_once)
            .arg(rule.claim.as_millis().max(1) as u64)
            .arg(PLACE_KEPT.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((kind, number, ms))
    }

    pub(crate) async fn room_place(
        &self,
        step: &str,
        event: i64,
        user: &str,
        rule: RoomRule,
    ) -> Result<Option<Place>, CacheError> {
        let (kind, number, ms) = self.room(step, event, user, rule).await?;
        Ok(match kind {
            1 => Some(Place::Waiting { number, ahead: ms }),
            2 => Some(Place::Admitted {
                number,
                claim_left: Duration::from_millis(ms),
            }),
            3 => Some(Place::Lapsed { number }),
            _ => None,
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
