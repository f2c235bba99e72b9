-- The sample service's only table; the runner applies this at start.
CREATE TABLE greetings (
    id bigserial PRIMARY KEY,
    word text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
