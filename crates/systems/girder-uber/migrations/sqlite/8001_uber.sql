-- Uber: drivers' status, rides and their state machine, offers, zones and the
-- airport queues. Positions live in the geo index, not here.
CREATE TABLE IF NOT EXISTS uber_drivers (
    id         TEXT    PRIMARY KEY,
    online     INTEGER NOT NULL,
    updated_ms BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS uber_rides (
    id                TEXT             PRIMARY KEY,
    rider             TEXT             NOT NULL,
    state             TEXT             NOT NULL,
    pickup_lat        REAL             NOT NULL,
    pickup_lon        REAL             NOT NULL,
    dropoff_lat       REAL             NOT NULL,
    dropoff_lon       REAL             NOT NULL,
    surge             REAL             NOT NULL,
    driver            TEXT,
    offer_driver      TEXT,
    offer_token       BIGINT,
    offer_deadline_ms BIGINT,
    match_deadline_ms BIGINT           NOT NULL,
    claim_until_ms    BIGINT           NOT NULL,
    cancel_reason     TEXT,
    arriving_ms       BIGINT,
    created_ms        BIGINT           NOT NULL,
    updated_ms        BIGINT           NOT NULL,
    version           BIGINT           NOT NULL
);
-- A rider has at most one ride under way; a driver at most one ride (the guarantee
-- that outlives any lease).
CREATE UNIQUE INDEX IF NOT EXISTS uber_rides_active_rider ON uber_rides (rider)
    WHERE state IN ('requested', 'matched', 'en_route', 'in_progress');
CREATE UNIQUE INDEX IF NOT EXISTS uber_rides_active_driver ON uber_rides (driver)
    WHERE state IN ('matched', 'en_route', 'in_progress');
-- Rides waiting for a matcher.
CREATE INDEX IF NOT EXISTS uber_rides_waiting ON uber_rides (claim_until_ms)
    WHERE state = 'requested';
-- The offer open to each driver.
CREATE INDEX IF NOT EXISTS uber_rides_offered ON uber_rides (offer_driver)
    WHERE state = 'requested';
CREATE INDEX IF NOT EXISTS uber_rides_by_rider ON uber_rides (rider, created_ms);
CREATE INDEX IF NOT EXISTS uber_rides_by_driver ON uber_rides (driver, created_ms);
-- Every offer made: to whom, under which lease token, and how it ended.
CREATE TABLE IF NOT EXISTS uber_offers (
    ride_id    TEXT   NOT NULL,
    driver     TEXT   NOT NULL,
    token      BIGINT NOT NULL,
    offered_ms BIGINT NOT NULL,
    outcome    TEXT   NOT NULL,
    PRIMARY KEY (ride_id, driver)
);
CREATE INDEX IF NOT EXISTS uber_offers_driver ON uber_offers (driver, offered_ms);
-- The ride's history: one row per transition.
CREATE TABLE IF NOT EXISTS uber_ride_events (
    ride_id TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    state   TEXT   NOT NULL,
    driver  TEXT,
    at_ms   BIGINT NOT NULL,
    PRIMARY KEY (ride_id, seq)
);
-- Operator-defined areas: surge zones and airport pickup zones (a fence as JSON).
CREATE TABLE IF NOT EXISTS uber_zones (
    name       TEXT   PRIMARY KEY,
    kind       TEXT   NOT NULL,
    shape      TEXT   NOT NULL,
    updated_ms BIGINT NOT NULL
);
-- Drivers waiting in an airport zone, first in first offered.
CREATE TABLE IF NOT EXISTS uber_airport_queue (
    zone       TEXT   NOT NULL,
    driver     TEXT   NOT NULL,
    entered_ms BIGINT NOT NULL,
    PRIMARY KEY (zone, driver)
);
CREATE INDEX IF NOT EXISTS uber_airport_queue_order ON uber_airport_queue (zone, entered_ms, driver);
