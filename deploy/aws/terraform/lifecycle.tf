# The lifecycle: Auto Scaling -> EventBridge (the lifecycle action's event) -> SSM Automation
# -> Run Command on the instance -> ansible-playbook (deploy/aws/ansible), which completes the
# action itself. If the command cannot run at all, the automation completes it with the
# hook's default (ABANDON on launch, CONTINUE on terminate).

resource "aws_ssm_parameter" "release" {
  name        = "/${var.name}/release-version"
  description = "The release every livecast instance must run (the launch check compares it)."
  type        = "String"
  value       = var.release_version
  # Later releases are set by scripts/deploy.sh aws (then an instance refresh).
  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_ssm_document" "playbook" {
  name            = "${var.name}-playbook"
  document_type   = "Command"
  document_format = "YAML"
  content = yamlencode({
    schemaVersion = "2.2"
    description   = "Run a livecast lifecycle playbook on this instance."
    parameters = {
      Playbook             = { type = "String", allowedValues = ["launch.yml", "terminate.yml"] }
      Role                 = { type = "String", allowedValues = ["web", "ingest", "logship"] }
      AutoScalingGroupName = { type = "String" }
      LifecycleHookName    = { type = "String" }
      InstanceId           = { type = "String" }
      ExpectedVersion      = { type = "String", default = "{{ssm:/${var.name}/release-version}}" }
    }
    mainSteps = [{
      action = "aws:runShellScript"
      name   = "playbook"
      inputs = {
        timeoutSeconds = "900"
        runCommand = [join(" ", [
          "ansible-playbook -i localhost, -c local /opt/livecast/ansible/{{Playbook}}",
          "-e livecast_role={{Role}}",
          "-e livecast_expected_version={{ExpectedVersion}}",
          "-e livecast_asg_name={{AutoScalingGroupName}}",
          "-e livecast_lifecycle_hook={{LifecycleHookName}}",
          "-e livecast_instance_id={{InstanceId}}",
          "-e livecast_region=${var.region}",
          "-e livecast_archive=s3://${aws_s3_bucket.archive.bucket}/access",
          "-e livecast_encoder_cidrs=${join(",", var.encoder_cidrs)}",
        ])]
      }
    }]
  })
}

resource "aws_ssm_document" "lifecycle" {
  name            = "${var.name}-lifecycle"
  document_type   = "Automation"
  document_format = "YAML"
  content = yamlencode({
    schemaVersion = "0.3"
    description   = "Answer an Auto Scaling lifecycle action by running the livecast playbook on the instance."
    assumeRole    = "{{AutomationAssumeRole}}"
    parameters = {
      AutomationAssumeRole = { type = "String", default = aws_iam_role.automation.arn }
      InstanceId           = { type = "String" }
      AutoScalingGroupName = { type = "String" }
      LifecycleHookName    = { type = "String" }
      Role                 = { type = "String" }
      Playbook             = { type = "String" }
      FailureResult        = { type = "String", allowedValues = ["ABANDON", "CONTINUE"] }
    }
    mainSteps = [
      {
        name      = "runPlaybook"
        action    = "aws:runCommand"
        onFailure = "step:answerDefault"
        inputs = {
          DocumentName = aws_ssm_document.playbook.name
          InstanceIds  = ["{{InstanceId}}"]
          Parameters = {
            Playbook             = ["{{Playbook}}"]
            Role                 = ["{{Role}}"]
            AutoScalingGroupName = ["{{AutoScalingGroupName}}"]
            LifecycleHookName    = ["{{LifecycleHookName}}"]
            InstanceId           = ["{{InstanceId}}"]
          }
        }
        isEnd = true
      },
      {
        name   = "answerDefault"
        action = "aws:executeAwsApi"
        inputs = {
          Service               = "autoscaling"
          Api                   = "CompleteLifecycleAction"
          AutoScalingGroupName  = "{{AutoScalingGroupName}}"
          LifecycleHookName     = "{{LifecycleHookName}}"
          InstanceId            = "{{InstanceId}}"
          LifecycleActionResult = "{{FailureResult}}"
        }
        isEnd = true
      },
    ]
  })
}

locals {
  # One rule per group and transition: the role and the playbook are fixed by which it is.
  lifecycle_rules = {
    web-launch     = { group = aws_autoscaling_group.web.name, role = "web", transition = "launch", playbook = "launch.yml", failure = "ABANDON" }
    web-terminate  = { group = aws_autoscaling_group.web.name, role = "web", transition = "terminate", playbook = "terminate.yml", failure = "CONTINUE" }
    ingest-launch  = { group = aws_autoscaling_group.single["ingest"].name, role = "ingest", transition = "launch", playbook = "launch.yml", failure = "ABANDON" }
    logship-launch = { group = aws_autoscaling_group.single["logship"].name, role = "logship", transition = "launch", playbook = "launch.yml", failure = "ABANDON" }
  }
}

resource "aws_cloudwatch_event_rule" "lifecycle" {
  for_each    = local.lifecycle_rules
  name        = "${var.name}-${each.key}"
  description = "livecast: ${each.value.transition} lifecycle action of ${each.value.group}"
  event_pattern = jsonencode({
    source        = ["aws.autoscaling"]
    "detail-type" = [each.value.transition == "launch" ? "EC2 Instance-launch Lifecycle Action" : "EC2 Instance-terminate Lifecycle Action"]
    detail = {
      AutoScalingGroupName = [each.value.group]
    }
  })
}

resource "aws_cloudwatch_event_target" "lifecycle" {
  for_each = local.lifecycle_rules
  rule     = aws_cloudwatch_event_rule.lifecycle[each.key].name
  arn      = "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:automation-definition/${aws_ssm_document.lifecycle.name}:$DEFAULT"
  role_arn = aws_iam_role.events.arn

  input_transformer {
    input_paths = {
      instance = "$.detail.EC2InstanceId"
      group    = "$.detail.AutoScalingGroupName"
      hook     = "$.detail.LifecycleHookName"
    }
    input_template = <<-EOT
      {"InstanceId": [<instance>], "AutoScalingGroupName": [<group>], "LifecycleHookName": [<hook>],
       "Role": ["${each.value.role}"], "Playbook": ["${each.value.playbook}"], "FailureResult": ["${each.value.failure}"]}
    EOT
  }
}
