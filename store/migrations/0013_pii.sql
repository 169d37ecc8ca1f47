-- One rule per tenant for personal data (phone numbers, e-mails, CPF, CNPJ, card numbers) in
-- memory writes and traces: keep it as written, mask it, or refuse the memory (store/pii.py).
alter table tenants
    add column pii_policy text not null default 'keep'
        check (pii_policy in ('keep', 'mask', 'refuse'));
