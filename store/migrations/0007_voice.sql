-- Voice notes: an inbound message with audio is transcribed before it is answered, and the
-- transcript (or why there is none) is kept on the message.

alter table messages
    -- null: nothing to transcribe; pending: waiting for the transcribe_audio job; done: the
    -- transcript is the user's text; failed / skipped: the user was asked to type instead.
    add column transcription_status text
        check (transcription_status in ('pending', 'done', 'failed', 'skipped')),
    add column transcript text,
    add column transcript_language text,
    -- exp(mean token log-probability), 0-1; unsure when low or when it may not be speech.
    add column transcript_confidence real,
    add column transcript_unsure boolean,
    add column transcription_error text,
    add column audio_seconds real check (audio_seconds is null or audio_seconds >= 0);

-- Every way an inbound message is stored marks a voice note as waiting for its transcript.
create function mark_voice_note() returns trigger
language plpgsql as $$
begin
    if new.direction = 'inbound' and new.transcription_status is null
       and jsonb_path_exists(new.media, '$[*] ? (@.content_type like_regex "^audio/" flag "i")')
    then
        new.transcription_status := 'pending';
    end if;
    return new;
end
$$;

create trigger messages_voice_note before insert on messages
    for each row execute function mark_voice_note();

-- The turn job's "is a voice note of this conversation still being transcribed?".
create index messages_awaiting_transcript_idx on messages (conversation_id, id)
    where transcription_status = 'pending' and processed_at is null;
