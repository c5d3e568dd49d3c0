-- GoPuff: centres, items, inventory (with a version column for optimistic orders),
-- orders and their lines, and the shared settings (the cursor key).
-- IF NOT EXISTS: a database created before migrations upgrades in place.
CREATE TABLE IF NOT EXISTS gopuff_centers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gopuff_orders (
    id BIGSERIAL PRIMARY KEY,
    center_id BIGINT NOT NULL REFERENCES gopuff_centers (id),
    user_name TEXT NOT NULL,
    strategy TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gopuff_items (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gopuff_inventory (
    center_id BIGINT NOT NULL REFERENCES gopuff_centers (id),
    sku TEXT NOT NULL REFERENCES gopuff_items (sku),
    quantity BIGINT NOT NULL CHECK (quantity >= 0),
    version BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (center_id, sku)
);
CREATE TABLE IF NOT EXISTS gopuff_order_lines (
    order_id BIGINT NOT NULL REFERENCES gopuff_orders (id),
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX IF NOT EXISTS gopuff_orders_by_center ON gopuff_orders (center_id, id);
CREATE TABLE IF NOT EXISTS gopuff_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
