-- Token signing keys join the key ring: several verify, the newest signs.
-- `algorithm` says how a signing key is used (HS256 or EdDSA); data keys
-- leave it NULL. A retired key verifies nothing from then on.
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check CHECK (purpose IN ('data', 'jwt'));
ALTER TABLE keys ADD COLUMN algorithm text CHECK (
    CASE WHEN purpose = 'jwt' THEN coalesce(algorithm IN ('HS256', 'EdDSA'), false)
         ELSE algorithm IS NULL END
);
ALTER TABLE keys ADD COLUMN retired_at timestamptz;
