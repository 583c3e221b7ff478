# Three Auto Scaling groups: the front-ends (scaled on viewers and requests, with a launching
# and a terminating lifecycle hook), and an ingest and a shipper, each a group of one (replaced
# if its instance fails; they take the same launch check).

locals {
  roles = {
    web     = { instance_type = var.instance_type_web, security_group = aws_security_group.web.id }
    ingest  = { instance_type = var.instance_type_ingest, security_group = aws_security_group.ingest.id }
    logship = { instance_type = var.instance_type_logship, security_group = aws_security_group.logship.id }
  }
}

resource "aws_launch_template" "role" {
  for_each      = local.roles
  name_prefix   = "${var.name}-${each.key}-"
  image_id      = var.ami_id
  instance_type = each.value.instance_type
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.role[each.key].arn
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [each.value.security_group]
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 20
      volume_type = "gp3"
      encrypted   = true
    }
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(templatefile("${path.module}/user-data.sh.tftpl", {
    role              = each.key
    region            = var.region
    efs_id            = aws_efs_file_system.shared.id
    release_bucket    = var.release_bucket
    release_parameter = aws_ssm_parameter.release.name
  }))

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name            = "${var.name}-${each.key}"
      "livecast:role" = each.key
    }
  }
}

resource "aws_autoscaling_group" "web" {
  name                = "${var.name}-web"
  min_size            = var.web_min
  max_size            = var.web_max
  vpc_zone_identifier = var.private_subnet_ids
  target_group_arns   = [aws_lb_target_group.web.arn]
  health_check_type   = "ELB"
  # The launch check itself waits for readiness; this only covers the ALB's first checks.
  health_check_grace_period = 30
  default_instance_warmup   = 60
  enabled_metrics           = ["GroupInServiceInstances", "GroupPendingInstances", "GroupTerminatingInstances"]

  launch_template {
    id      = aws_launch_template.role["web"].id
    version = aws_launch_template.role["web"].latest_version
  }

  # A new front-end waits in Pending:Wait until the launch check completes the action; if
  # nothing answers in time it is abandoned (terminated and replaced), never put in service.
  initial_lifecycle_hook {
    name                 = "${var.name}-web-launch"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    default_result       = "ABANDON"
    heartbeat_timeout    = var.launch_heartbeat_secs
  }

  # A leaving front-end waits in Terminating:Wait while it drains and its access log is
  # shipped and archived; if that takes too long it goes anyway (its log stays on EFS, where
  # the shipper archives it later).
  initial_lifecycle_hook {
    name                 = "${var.name}-web-terminate"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    default_result       = "CONTINUE"
    heartbeat_timeout    = var.terminate_heartbeat_secs
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
    }
  }

  tag {
    key                 = "livecast:role"
    value               = "web"
    propagate_at_launch = true
  }
}

resource "aws_autoscaling_group" "single" {
  for_each            = toset(["ingest", "logship"])
  name                = "${var.name}-${each.key}"
  min_size            = 1
  max_size            = 1
  vpc_zone_identifier = var.private_subnet_ids
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.role[each.key].id
    version = aws_launch_template.role[each.key].latest_version
  }

  initial_lifecycle_hook {
    name                 = "${var.name}-${each.key}-launch"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    default_result       = "ABANDON"
    heartbeat_timeout    = var.launch_heartbeat_secs
  }

  tag {
    key                 = "livecast:role"
    value               = each.key
    propagate_at_launch = true
  }
}

# Scaling: requests per front-end (from the ALB) and viewers per front-end (the shipper's
# concurrent-viewer count, published to CloudWatch by the shipper's instance, divided by the
# front-ends in service). Whichever asks for more wins.
resource "aws_autoscaling_policy" "requests" {
  name                   = "${var.name}-requests-per-frontend"
  autoscaling_group_name = aws_autoscaling_group.web.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.viewers.arn_suffix}/${aws_lb_target_group.web.arn_suffix}"
    }
    target_value = var.requests_per_frontend
  }
}

resource "aws_autoscaling_policy" "viewers" {
  name                   = "${var.name}-viewers-per-frontend"
  autoscaling_group_name = aws_autoscaling_group.web.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    customized_metric_specification {
      metrics {
        id          = "viewers"
        return_data = false
        metric_stat {
          metric {
            namespace   = "Livecast"
            metric_name = "ViewersConcurrent"
          }
          stat = "Maximum"
        }
      }
      metrics {
        id          = "frontends"
        return_data = false
        metric_stat {
          metric {
            namespace   = "AWS/AutoScaling"
            metric_name = "GroupInServiceInstances"
            dimensions {
              name  = "AutoScalingGroupName"
              value = "${var.name}-web"
            }
          }
          stat = "Average"
        }
      }
      metrics {
        id          = "per_frontend"
        label       = "viewers per front-end"
        expression  = "viewers / frontends"
        return_data = true
      }
    }
    target_value = var.viewers_per_frontend
  }
}
