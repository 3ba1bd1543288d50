// Dialogue UI sample: a minimal IMGUI dialogue window for one NpcCharacter.
//
// 1. Add a SteerNpcManager to the scene (target = your `steernpc serve` address).
// 2. Add an NpcCharacter (character id "brom") to an NPC object.
// 3. Add this DialogueUI anywhere and drag the NpcCharacter into its "Npc" field.
// Press Play, type a line, press Enter: the reply streams in token by token. The mood buttons
// steer the character live; Esc cancels a reply that is still streaming.
using System.Text;
using SteerNpc;
using SteerNpc.Unity;
using UnityEngine;

public sealed class DialogueUI : MonoBehaviour
{
    public NpcCharacter npc;
    public string[] moods = { "", "friendly", "angry", "drunk" };

    private readonly StringBuilder _log = new StringBuilder();
    private string _input = "";
    private string _status = "connecting...";
    private Vector2 _scroll;

    private void OnEnable()
    {
        if (npc == null) npc = FindObjectOfType<NpcCharacter>();
        if (npc == null) { _status = "no NpcCharacter in the scene"; return; }
        npc.onSessionReady.AddListener(OnReady);
        npc.onReplyDelta.AddListener(OnDelta);
        npc.onReply.AddListener(OnReply);
        npc.onError.AddListener(OnError);
    }

    private void OnDisable()
    {
        if (npc == null) return;
        npc.onSessionReady.RemoveListener(OnReady);
        npc.onReplyDelta.RemoveListener(OnDelta);
        npc.onReply.RemoveListener(OnReply);
        npc.onError.RemoveListener(OnError);
    }

    private void OnReady() { _status = "talking to " + npc.CharacterId; }

    private void OnDelta(string piece) { _log.Append(piece); _scroll.y = float.MaxValue; }

    private void OnReply(string text)
    {
        NpcReply reply = npc.CurrentReply;
        if (reply != null && reply.Final != null && reply.Final.FinishReason == FinishReason.Cancelled) _log.Append(" [cancelled]");
        if (reply != null && reply.Final != null) _status = "attributes " + reply.Final.Attributes;
        _log.Append("\n\n");
    }

    private void OnError(int code, string message) { _log.Append("\n[error ").Append(code).Append("] ").Append(message).Append("\n\n"); }

    private void Send()
    {
        if (npc == null || string.IsNullOrEmpty(_input.Trim())) return;
        _log.Append("You: ").Append(_input).Append("\n").Append(npc.CharacterId).Append(": ");
        npc.Say(_input);
        _input = "";
    }

    private void OnGUI()
    {
        Event e = Event.current;
        if (e.type == EventType.KeyDown && e.keyCode == KeyCode.Return) { Send(); e.Use(); }
        if (e.type == EventType.KeyDown && e.keyCode == KeyCode.Escape && npc != null) { npc.Cancel(); e.Use(); }

        GUILayout.BeginArea(new Rect(10, 10, Mathf.Min(640, Screen.width - 20), Screen.height - 20), GUI.skin.box);
        GUILayout.Label(_status);
        _scroll = GUILayout.BeginScrollView(_scroll, GUILayout.ExpandHeight(true));
        GUILayout.Label(_log.ToString());
        GUILayout.EndScrollView();
        GUILayout.BeginHorizontal();
        _input = GUILayout.TextField(_input, GUILayout.ExpandWidth(true));
        if (GUILayout.Button("Say", GUILayout.Width(60))) Send();
        GUILayout.EndHorizontal();
        GUILayout.BeginHorizontal();
        foreach (string mood in moods)
            if (GUILayout.Button(string.IsNullOrEmpty(mood) ? "(no mood)" : mood) && npc != null) npc.SetMood(mood);
        GUILayout.EndHorizontal();
        GUILayout.EndArea();
    }
}
