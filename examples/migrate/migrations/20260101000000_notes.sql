CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    author text NOT NULL,
    body text NOT NULL,
    revision int NOT NULL DEFAULT 1
);
CREATE TABLE note_counts (
    author text PRIMARY KEY,
    notes bigint NOT NULL
);
