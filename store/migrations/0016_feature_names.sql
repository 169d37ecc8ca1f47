-- Feature names come from one list, the registry in graphs/features.py, and the management API
-- refuses a name it does not hold (422, naming the known ones). The database keeps only their
-- shape, so a new specialist is a registry entry, not a migration.

alter table plans drop constraint plans_features_check;
alter table plans add constraint plans_features_check
    check (array_position(features, null) is null
           and (cardinality(features) = 0
                or array_to_string(features, ',') ~ '^[a-z][a-z0-9_]{0,62}(,[a-z][a-z0-9_]{0,62})*$'));

alter table feature_overrides drop constraint feature_overrides_feature_check;
alter table feature_overrides add constraint feature_overrides_feature_check
    check (feature ~ '^[a-z][a-z0-9_]{0,62}$');
