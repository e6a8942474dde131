from fastapi import FastAPI
from pydantic import BaseModel
from typing import List, Optional

app = FastAPI()

class TranscriptSegment(BaseModel):
    text: str
    speaker: str
    is_user: bool

class WebhookRequest(BaseModel):
    session_id: str
    segments: List[TranscriptSegment]

@app.post("/webhook")
def handle_transcript(data: WebhookRequest, uid: str, session_id: str):
    # Combine all segments into transcript
    transcript = " ".join([s.text for s in data.segments]).lower()

    # Detect trigger phrases
    if "what do you think" in transcript or "any advice" in transcript:
        return {
            "session_id": data.session_id,
            "notification": {
                "prompt": """You are a helpful mentor for {{user_name}}.
                Based on their goals ({{user_facts}}) and the current discussion ({{user_context}}),
                provide specific, actionable advice in under 100 words.""",
                "params": ["user_name", "user_facts", "user_context"]
            }
        }

    # No notification needed
    return {"session_id": data.session_id}
